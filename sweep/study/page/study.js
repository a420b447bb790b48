// The rater's page of a motion-sweep user-preference study. No variant names ever reach it: the server
// gives "left"/"right" clips behind opaque URLs and fills the variants into each vote itself.
"use strict";
(function () {
  const token = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
  const api = (path) => "/api/" + encodeURIComponent(token) + "/" + path;
  const $ = (id) => document.getElementById(id);
  const videos = { reference: $("video-reference"), left: $("video-left"), right: $("video-right") };
  const buttons = { left: $("choose-left"), right: $("choose-right") };

  let session = null;
  const answered = new Set();
  let current = null;      // {p: presentation index, q: question index}
  let loadedIndex = -1;    // presentation whose clips are in the players
  let loadSeq = 0;
  let ready = false;
  let busy = false;
  let shownAt = 0;

  const keyOf = (item, repeat, question) => item + "|" + (repeat ? 1 : 0) + "|" + question;

  function setState(state) { document.body.dataset.state = state; }
  function setStatus(text) { $("status").textContent = text || ""; }
  function setButtons(enabled) { buttons.left.disabled = buttons.right.disabled = !enabled; }

  function fail(message) {
    setState("failed");
    $("study").hidden = true;
    $("failure").hidden = false;
    $("failure-text").textContent = message;
  }

  function counts() {
    let done = 0;
    for (const p of session.presentations) {
      for (const q of session.questions) {
        if (answered.has(keyOf(p.item, p.repeat, q.id))) done += 1;
      }
    }
    return { done: done, total: session.presentations.length * session.questions.length };
  }

  function nextStep() {
    for (let i = 0; i < session.presentations.length; i++) {
      const p = session.presentations[i];
      for (let j = 0; j < session.questions.length; j++) {
        if (!answered.has(keyOf(p.item, p.repeat, session.questions[j].id))) return { p: i, q: j };
      }
    }
    return null;
  }

  function updateProgress() {
    const c = counts();
    const pct = c.total ? Math.round((100 * c.done) / c.total) : 100;
    $("progress-fill").style.width = pct + "%";
    $("progress").setAttribute("aria-valuenow", String(pct));
    const pair = current ? "Pair " + (current.p + 1) + " of " + session.presentations.length + " · " : "";
    $("progress-text").textContent = pair + c.done + " of " + c.total + " answers";
  }

  function loadVideo(video, url) {
    return new Promise(function (resolve, reject) {
      function cleanup() {
        video.removeEventListener("loadeddata", ok);
        video.removeEventListener("error", bad);
      }
      function ok() { cleanup(); resolve(); }
      function bad() { cleanup(); reject(new Error("a clip could not be loaded")); }
      video.addEventListener("loadeddata", ok);
      video.addEventListener("error", bad);
      video.src = url;
      video.load();
    });
  }

  function playAll() {
    for (const v of Object.values(videos)) {
      v.currentTime = 0;
      const played = v.play();
      if (played && played.catch) played.catch(function () { /* replaced by the next clip: fine */ });
    }
  }

  async function showPresentation(index) {
    const p = session.presentations[index];
    const seq = ++loadSeq;
    ready = false;
    setButtons(false);
    setState("loading");
    loadedIndex = index;
    try {
      await Promise.all([loadVideo(videos.reference, p.reference), loadVideo(videos.left, p.left),
                         loadVideo(videos.right, p.right)]);
    } catch (err) {
      if (seq === loadSeq) setStatus("A clip could not be loaded. Reload the page to try again.");
      return;
    }
    if (seq !== loadSeq) return;
    document.body.dataset.item = p.item + (p.repeat ? "r" : "");
    playAll();
    showQuestion();
  }

  function showQuestion() {
    const q = session.questions[current.q];
    $("question").textContent = q.text;
    $("question-count").textContent = session.questions.length > 1
      ? "Question " + (current.q + 1) + " of " + session.questions.length : "";
    document.body.dataset.question = q.id;
    for (const b of Object.values(buttons)) b.classList.remove("chosen");
    updateProgress();
    ready = true;
    busy = false;
    setButtons(true);
    setState("ready");
    shownAt = performance.now();
  }

  function advance() {
    current = nextStep();
    if (!current) {
      finish();
      return;
    }
    if (current.p !== loadedIndex) showPresentation(current.p);
    else showQuestion();
  }

  function finish() {
    loadSeq++;
    ready = false;
    setButtons(false);
    for (const v of Object.values(videos)) {
      v.pause();
      v.removeAttribute("src");
      v.load();
    }
    updateProgress();
    $("study").hidden = true;
    $("done").hidden = false;
    $("done-text").textContent = "All " + counts().total + " answers are saved. You can close this page.";
    setState("done");
  }

  async function choose(side) {
    if (!ready || busy || !current) return;
    busy = true;
    ready = false;
    setButtons(false);
    buttons[side].classList.add("chosen");
    setState("sending");
    setStatus("");
    const p = session.presentations[current.p];
    const q = session.questions[current.q];
    const body = { item: p.item, repeat: p.repeat, question: q.id, choice: side,
                   response_ms: Math.max(0, Math.round(performance.now() - shownAt)) };
    let resp = null;
    try {
      resp = await fetch(api("vote"), { method: "POST", headers: { "Content-Type": "application/json" },
                                        body: JSON.stringify(body), cache: "no-store", credentials: "same-origin" });
    } catch (err) {
      resp = null;
    }
    const data = resp ? await resp.json().catch(function () { return {}; }) : {};
    if (resp && (resp.status === 201 || resp.status === 409)) {  // 409: saved before (another tab)
      answered.add(keyOf(p.item, p.repeat, q.id));
      busy = false;
      advance();
      return;
    }
    let message = "The answer could not be saved (network). Choose again to retry.";
    if (resp) {
      message = "The answer could not be saved: " + (data.error || resp.status) + ". Choose again to retry.";
    }
    buttons[side].classList.remove("chosen");
    setStatus(message);
    busy = false;
    ready = true;
    setButtons(true);
    setState("ready");
  }

  document.addEventListener("keydown", function (e) {
    if (e.altKey || e.ctrlKey || e.metaKey || e.repeat) return;
    let side = null;
    if (e.key === "ArrowLeft" || e.key === "1") side = "left";
    else if (e.key === "ArrowRight" || e.key === "2") side = "right";
    if (!side) return;
    e.preventDefault();
    choose(side);
  });
  for (const side of ["left", "right"]) {
    buttons[side].addEventListener("click", function () {
      buttons[side].blur();  // Enter/Space must not answer the next question
      choose(side);
    });
  }

  async function start() {
    let resp;
    try {
      resp = await fetch(api("session"), { cache: "no-store", credentials: "same-origin" });
    } catch (err) {
      fail("The study server cannot be reached. Check your connection and reload the page.");
      return;
    }
    if (!resp.ok) {
      fail(resp.status === 403 ? "This study link is not valid." : "The study could not be loaded (" + resp.status + ").");
      return;
    }
    session = await resp.json();
    document.title = session.title;
    $("title").textContent = session.title;
    $("instructions").textContent = session.instructions;
    for (const a of session.answered) answered.add(keyOf(a[0], a[1], a[2]));
    $("study").hidden = false;
    advance();
  }

  start();
})();
