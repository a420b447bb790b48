// The report's gallery (sweep/report/gallery.py makes its data, sweep/report/html.py writes it to gallery.js as
// window.REPORT_GALLERY):
// filters over the groups and cards, pages of `data-page-size` groups, previews loaded lazily by the browser.
// Text from the tables is only ever set with textContent.
(function () {
  "use strict";
  const data = window.REPORT_GALLERY;
  const section = document.getElementById("gallery");
  if (!data || !section) return;
  const pageSize = parseInt(section.dataset.pageSize, 10) || 20;
  const form = document.getElementById("filters");
  const list = document.getElementById("gallery-groups");
  const count = document.getElementById("gallery-count");
  const info = document.getElementById("page-info");
  const prev = document.getElementById("page-prev");
  const next = document.getElementById("page-next");
  const chosen = {};  // filter key -> value ("" = any)
  let page = 0;

  const str = (v) => (v === null || v === undefined ? "" : String(v));
  const hasErrors = data.groups.some((g) => g.c.some((c) => c.e));

  // -- filters ------------------------------------------------------------------------------------
  const groupFilters = [["sweep", "sweep"], ["video", "video"], ["prompt", "prompt"], ["seed", "generation seed"]]
    .filter(([key]) => (data.filters[key] || []).length > 1)
    .map(([key, label]) => ({key: key, label: label, values: data.filters[key], group: true}));
  const axisFilters = data.axes.filter((a) => a.values.length > 1)
    .map((a) => ({key: a.key, label: a.label + (a.key.endsWith("_applied") ? " (applied)" : ""), values: a.values}));
  const statusFilter = hasErrors ? [{key: "status", label: "status", values: ["ok", "error"]}] : [];
  const filters = groupFilters.concat(axisFilters, statusFilter);

  function addSelect(f) {
    const label = document.createElement("label");
    label.textContent = f.label;
    const select = document.createElement("select");
    select.name = f.key;
    select.dataset.filter = f.key;
    const any = document.createElement("option");
    any.value = "";
    any.textContent = "any";
    select.appendChild(any);
    for (const v of f.values) {
      const o = document.createElement("option");
      o.value = v;
      o.textContent = v;
      select.appendChild(o);
    }
    select.addEventListener("change", () => { chosen[f.key] = select.value; page = 0; render(); });
    label.appendChild(select);
    form.appendChild(label);
  }
  filters.forEach(addSelect);
  if (filters.length) {
    const reset = document.createElement("button");
    reset.type = "reset";
    reset.id = "filters-reset";
    reset.textContent = "show all";
    form.appendChild(reset);
    form.addEventListener("reset", () => {
      for (const k of Object.keys(chosen)) chosen[k] = "";
      page = 0;
      setTimeout(render, 0);  // after the selects are reset
    });
  }

  function cardValue(card, key) {
    if (key === "status") return card.e ? "error" : "ok";
    if (key === "checkpoint_step_applied") return str(card.s);
    return str(data.variants[card.v].axes[key]);
  }
  function groupMatches(g) {
    return groupFilters.every((f) => !chosen[f.key] || str(g[f.key]) === chosen[f.key]);
  }
  function cardMatches(card) {
    return axisFilters.concat(statusFilter).every((f) => !chosen[f.key] || cardValue(card, f.key) === chosen[f.key]);
  }

  // -- cards --------------------------------------------------------------------------------------
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function clip(c, alt) {
    if (!c.file) return el("div", "clip missing", c.note || "no preview");
    const img = el("img", "clip");
    img.loading = "lazy";
    img.decoding = "async";
    img.alt = alt;
    if (c.w && c.h) { img.width = c.w; img.height = c.h; }
    img.src = c.file;
    img.title = c.src || c.url || "";
    if (!c.url) return img;
    const a = el("a");
    a.href = c.url;
    a.target = "_blank";
    a.rel = "noopener";
    a.appendChild(img);
    return a;
  }
  function axesText(card) {
    const variant = data.variants[card.v];
    const parts = data.axes.filter((a) => a.key !== "checkpoint_step_applied" && a.values.length > 1)
      .map((a) => a.label + " " + str(variant.axes[a.key]));
    if (!parts.length) parts.push(variant.id);
    parts.push("step " + str(card.s));
    return parts.join(" · ");
  }
  function metricsText(card) {
    return data.metrics.map((m, i) => (card.m[i] === null ? null : m.label + " " + m.arrow + " " + card.m[i].toFixed(3)))
      .filter((x) => x !== null).join("\n");
  }
  function cardEl(card) {
    const fig = el("figure", card.e ? "card error" : "card");
    fig.dataset.variant = data.variants[card.v].id;
    fig.dataset.step = str(card.s);
    if (card.e) {
      fig.appendChild(el("div", "clip", "error: " + card.e));
    } else {
      fig.appendChild(clip(card, data.variants[card.v].id + " @ " + str(card.s)));
    }
    const cap = el("figcaption");
    cap.appendChild(el("div", "axes", axesText(card)));
    const m = metricsText(card);
    if (m) {
      const div = el("div", "metrics");
      for (const line of m.split("\n")) { div.appendChild(el("span", null, line)); div.appendChild(el("br")); }
      cap.appendChild(div);
    }
    fig.appendChild(cap);
    return fig;
  }
  function groupEl(g, cards) {
    const box = el("article", "group");
    const h = el("h3");
    if (data.filters.sweep && data.filters.sweep.length > 1) h.appendChild(el("span", "sweep", str(g.sweep) + " · "));
    h.appendChild(el("span", "video", str(g.video)));
    h.appendChild(document.createTextNode(" · "));
    h.appendChild(el("span", "prompt", "“" + str(g.prompt) + "”"));
    h.appendChild(el("span", "meta", "generation seed " + str(g.seed) + " · " + cards.length + " of " + g.c.length + " clips"));
    box.appendChild(h);
    const row = el("div", "cards");
    const ref = el("figure", "card reference");
    ref.appendChild(clip(g.ref, "reference " + str(g.video)));
    const cap = el("figcaption");
    cap.appendChild(el("div", "axes", "reference"));
    cap.appendChild(el("div", "metrics", str(g.video)));
    ref.appendChild(cap);
    row.appendChild(ref);
    cards.forEach((c) => row.appendChild(cardEl(c)));
    // one box size for every clip of the group: the aspect ratio of its first preview
    const sized = [g.ref].concat(cards).find((c) => c.w && c.h);
    const thumbH = parseFloat(getComputedStyle(document.documentElement).getPropertyValue("--thumb-h")) || 128;
    if (sized) box.style.setProperty("--thumb-w", Math.round(thumbH * sized.w / sized.h) + "px");
    box.appendChild(row);
    return box;
  }

  // -- pages ----------------------------------------------------------------------------------------
  let pages = 1;
  function render() {
    const shown = [];
    let nCards = 0, total = 0;
    for (const g of data.groups) {
      total += g.c.length;
      if (!groupMatches(g)) continue;
      const cards = g.c.filter(cardMatches);
      if (!cards.length) continue;
      shown.push([g, cards]);
      nCards += cards.length;
    }
    pages = Math.max(1, Math.ceil(shown.length / pageSize));
    page = Math.min(page, pages - 1);
    const slice = shown.slice(page * pageSize, (page + 1) * pageSize);
    list.replaceChildren.apply(list, slice.map(([g, cards]) => groupEl(g, cards)));
    count.textContent = nCards + " of " + total + " clips in " + shown.length + " of " + data.groups.length + " groups";
    section.dataset.matchingCards = String(nCards);
    section.dataset.matchingGroups = String(shown.length);
    section.dataset.page = String(page + 1);
    section.dataset.pages = String(pages);
    info.textContent = "page " + (page + 1) + " of " + pages;
    prev.disabled = page === 0;
    next.disabled = page >= pages - 1;
  }
  prev.addEventListener("click", () => { if (page > 0) { page -= 1; render(); section.scrollIntoView(); } });
  next.addEventListener("click", () => { if (page < pages - 1) { page += 1; render(); section.scrollIntoView(); } });
  render();
  section.dataset.ready = "true";
})();
