// The drawing page. Strokes are kept as vectors (so undo and resizing redraw them exactly); the drawing is sent
// to /api/predict as JSON pixels: the strokes drawn again no wider than MNIST's pens for their size, the ink's square
// area-averaged to 28×28 in the page, dark ink on white, which the server preprocesses like an uploaded image (crop,
// scale to 20 px, centre). No canvas encoding: toBlob waits for an idle moment, up to a second. While drawing,
// answers come at most every LIVE_MS; at pen-up the finished drawing is sent at once, and any answer but the one to
// the latest request is dropped. After a final answer the page offers "Right" and "Wrong? It was: 0 … 9"; a choice
// is sent to /api/feedback with the pixels the model saw and the drawing as PNG.
"use strict";

const LIVE_MS = 150; // while drawing, ask at most this often
const TIMEOUT_MS = 10000;
const SIDE = 28;
const MARGIN = 3; // paper cells around the ink in the 28×28 sent: the server sees paper at the border, and the ink
// spans 22 cells, close to the 20 it is scaled to (2 or 4 cells cost 1 to 3 of 500 test digits against PNG uploads)
const PEN_WIDTHS = [1 / 28, 1 / 20, 1 / 14, 1 / 10, 1 / 7]; // of the canvas side; 1/14 has MNIST's stroke-to-size ratio
const PEN_NAMES = ["finest", "fine", "medium", "bold", "boldest"]; // what a screen reader says of the slider
// The widest pen the model is sent, of the extent of the strokes' centre lines: MNIST's widest pens are 2.88 px on
// their 20-px box (preprocess.MNIST_STROKE), and the box holds the pen's width too: w / (extent + w) = 0.144. Any
// wider, and a small digit's loops fill in the 28×28 cells before the server can thin its strokes. A fine pen is
// left as it is: the server widens it just as well, and widened here, strokes cut by the canvas's edge lose more.
const MODEL_PEN_MAX = 0.168;
const MODEL_PEN_MIN = 2; // model canvas pixels: a dot or a tap stays visible
// The drawing is sent from a canvas of one size on every screen, not the pad's (CSS size × devicePixelRatio): the
// same strokes give the same pixels, and so the same answer, on a phone, a laptop or a 4K screen, and the page's
// pixel work stays a few milliseconds where a 2,900-px pad took 150 on the main thread. 560 = 20 × 28.
const MODEL_SIDE = 560;
const MAX_FILE_BYTES = 4 * 1024 * 1024; // the server's limit
const FILE_TYPES = ["image/png", "image/jpeg", "image/webp"];
const MAX_DRAWING_BYTES = 32 * 1024; // the server's limit for the drawing sent with a correction
const DRAWING_SIDES = [280, 140, 70]; // the drawing is sent at the first of these sizes whose PNG is small enough

const $ = (id) => document.getElementById(id);
const pad = $("pad");
const ctx = pad.getContext("2d", { willReadFrequently: true });
const modelPad = document.createElement("canvas"); // the drawing as the model is sent it (modelPens)
modelPad.width = modelPad.height = MODEL_SIDE;
const modelCtx = modelPad.getContext("2d", { willReadFrequently: true });
const result = document.querySelector(".result");
const digitOut = $("digit");
const confidenceOut = $("confidence");
const top3Out = $("top3");
const messageOut = $("message");
const announcer = $("announce");
const bars = $("bars");
const seen = $("seen");
const saliency = $("saliency");
const maps = $("maps");
const undoButton = $("undo");
const feedbackBox = $("feedback");
const feedbackStatus = $("feedback-status");
const rightButton = $("right");

let classes = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
let items = []; // the drawing: {kind: "stroke", width, points: [{x, y}] in 0..1} or {kind: "image", source, smooth}
let stroke = null; // the stroke being drawn
let drawingPointer = null; // id of the pointer drawing now, so a second finger does not scribble
let drawingType = null; // its kind: a pen takes over from a touch (a palm resting on the screen)
let seq = 0; // number of the latest request; answers to any other are stale and dropped
let inFlight = null; // {seq, controller} of the request awaiting its answer
let liveTimer = null;
let lastLiveAt = 0; // when a live request was last sent, or the stroke began (performance.now())
let liveWanted = false; // the drawing changed while a live request was in flight
let feedbackOn = false; // the server stores corrections (/api/model says)
let offered = null; // the final answer the correction buttons are about, while they are shown

// --- the canvas ----------------------------------------------------------------------------------

function redraw() {
  paint(ctx, (item) => item.width * pad.width);
  keepFocusOnHiding(undoButton, items.length === 0);
  undoButton.disabled = items.length === 0;
}

// A focused control about to be disabled or hidden hands the focus to Clear, which is always there: else the
// browser drops it to the page's start, and a keyboard user tabs through everything again.
function keepFocusOnHiding(control, hiding) {
  if (hiding && control.contains(document.activeElement)) $("clear").focus();
}

// Every item on the canvas of c, black on white, each stroke penWidth(stroke) canvas pixels wide.
function paint(c, penWidth) {
  c.fillStyle = "#fff";
  c.fillRect(0, 0, c.canvas.width, c.canvas.height);
  items.forEach((item) => drawItem(c, item, item.kind === "stroke" ? penWidth(item) : 0));
}

function drawItem(c, item, lineWidth) {
  const { width, height } = c.canvas;
  if (item.kind === "image") {
    const { width: w, height: h } = item.source;
    const scale = Math.min(width / w, height / h);
    c.imageSmoothingEnabled = item.smooth;
    c.drawImage(item.source, (width - w * scale) / 2, (height - h * scale) / 2, w * scale, h * scale);
    return;
  }
  c.lineWidth = lineWidth;
  c.lineCap = c.lineJoin = "round";
  c.strokeStyle = c.fillStyle = "#000";
  const [first, ...rest] = item.points.map((p) => ({ x: p.x * width, y: p.y * height }));
  c.beginPath();
  if (rest.length === 0) {
    c.arc(first.x, first.y, lineWidth / 2, 0, 2 * Math.PI);
    c.fill();
    return;
  }
  c.moveTo(first.x, first.y);
  rest.forEach((p) => c.lineTo(p.x, p.y));
  c.stroke();
}

// Each stroke's width as the model is sent it: the pen's, at most MNIST's widest for the drawing's size
// (MODEL_PEN_MAX), so that a small digit reads as a large one does. Strokes on a picture keep the pen's: the
// picture's digit, not theirs, sets the size.
function modelPens() {
  const own = (item) => item.width * MODEL_SIDE;
  if (items.some((item) => item.kind === "image")) return own;
  let left = Infinity, top = Infinity, right = -Infinity, bottom = -Infinity;
  const inside = (v) => Math.min(1, Math.max(0, v)) * MODEL_SIDE; // a stroke run off the canvas is cut at its edge
  items.forEach((item) => item.points.forEach((p) => {
    left = Math.min(left, inside(p.x));
    right = Math.max(right, inside(p.x));
    top = Math.min(top, inside(p.y));
    bottom = Math.max(bottom, inside(p.y));
  }));
  const extent = Math.max(right - left, bottom - top);
  const widest = Math.max(MODEL_PEN_MIN, MODEL_PEN_MAX * extent);
  return (item) => Math.min(widest, own(item));
}

function extendStroke(points) {
  const last = stroke.points[stroke.points.length - 1];
  stroke.points.push(...points);
  ctx.lineWidth = stroke.width * pad.width;
  ctx.beginPath();
  ctx.moveTo(last.x * pad.width, last.y * pad.height);
  points.forEach((p) => ctx.lineTo(p.x * pad.width, p.y * pad.height));
  ctx.stroke();
}

// As many canvas pixels as the screen shows (CSS size × devicePixelRatio), so strokes stay sharp on any screen.
function fitPad() {
  const side = Math.max(1, Math.round(pad.getBoundingClientRect().width * (window.devicePixelRatio || 1)));
  if (side === pad.width) return;
  pad.width = pad.height = side;
  redraw();
}

// Zooming or moving the window to a screen of another scale changes devicePixelRatio, and not always the pad's CSS
// size (which the ResizeObserver sees): the query for the present ratio says when it no longer holds, and each
// stroke checks again as it starts.
function fitPadOnPixelRatioChange() {
  const query = window.matchMedia(`(resolution: ${window.devicePixelRatio || 1}dppx)`);
  query.addEventListener("change", () => {
    fitPad();
    fitPadOnPixelRatioChange();
  }, { once: true });
}

// The drawing as the JSON the API takes: drawn with the model's pen widths on the model canvas, the square around
// the ink (with a margin) area-averaged to 28×28, dark ink on white; null when the canvas is blank or the ink spans
// fewer than minExtent of the model canvas's side.
function padPixels(minExtent = 0) {
  const { width, height } = modelPad;
  paint(modelCtx, modelPens());
  const rgba = modelCtx.getImageData(0, 0, width, height).data;
  const ink = new Uint8Array(width * height);
  let left = width, top = height, right = -1, bottom = -1;
  for (let y = 0, i = 0; y < height; y++) {
    for (let x = 0; x < width; x++, i++) {
      const value = 255 - Math.round(0.299 * rgba[4 * i] + 0.587 * rgba[4 * i + 1] + 0.114 * rgba[4 * i + 2]);
      ink[i] = value;
      if (value > 16) {
        if (x < left) left = x;
        if (x > right) right = x;
        if (y < top) top = y;
        if (y > bottom) bottom = y;
      }
    }
  }
  if (right < 0 || Math.max(right - left + 1, bottom - top + 1) < minExtent * width) return null;
  const side = Math.max(SIDE, Math.max(right - left + 1, bottom - top + 1) * SIDE / (SIDE - 2 * MARGIN));
  const x0 = (left + right + 1) / 2 - side / 2;
  const y0 = (top + bottom + 1) / 2 - side / 2;
  const sums = new Float64Array(SIDE * SIDE);
  const counts = new Float64Array(SIDE * SIDE);
  for (let y = Math.floor(y0); y < y0 + side; y++) {
    const row = Math.min(SIDE - 1, Math.max(0, Math.floor((y + 0.5 - y0) * SIDE / side)));
    const inside = y >= 0 && y < height;
    for (let x = Math.floor(x0); x < x0 + side; x++) {
      const cell = row * SIDE + Math.min(SIDE - 1, Math.max(0, Math.floor((x + 0.5 - x0) * SIDE / side)));
      counts[cell] += 1;
      if (inside && x >= 0 && x < width) sums[cell] += ink[y * width + x];
    }
  }
  return Array.from({ length: SIDE }, (_, r) => Array.from({ length: SIDE }, (_, c) => {
    const cell = r * SIDE + c;
    return Math.round(1000 * (1 - sums[cell] / counts[cell] / 255)) / 1000;
  }));
}

// --- drawing with a pointer ------------------------------------------------------------------------

function point(event) {
  const box = pad.getBoundingClientRect();
  return { x: (event.clientX - box.left) / box.width, y: (event.clientY - box.top) / box.height };
}

// A touch that has not moved while another pointer comes down is a hand resting on the screen, not a stroke; so is
// any touch once a pen comes down. The newcomer draws, and the resting touch's dot is dropped.
function restingTouch(event) {
  if (drawingType !== "touch" || event.pointerType === "mouse") return false;
  if (event.pointerType === "pen") return true;
  const [first] = stroke.points;
  return stroke.points.every((p) => Math.hypot(p.x - first.x, p.y - first.y) < 0.02);
}

function dropStroke() {
  if (pad.hasPointerCapture(drawingPointer)) pad.releasePointerCapture(drawingPointer);
  items = items.filter((item) => item !== stroke);
  drawingPointer = null;
  stroke = null;
}

pad.addEventListener("pointerdown", (event) => {
  if (event.pointerType === "mouse" && event.button !== 0) return;
  if (drawingPointer !== null) {
    if (!restingTouch(event)) return;
    dropStroke();
  }
  event.preventDefault();
  drawingPointer = event.pointerId;
  drawingType = event.pointerType;
  pad.setPointerCapture(event.pointerId);
  fitPad(); // a ratio change that no event reported (some browsers and emulators send none)
  forget(); // an answer on its way is about the drawing before this stroke
  if (result.dataset.state === "final" || result.dataset.state === "pending") {
    setState("live");
    if (digitOut.textContent === "?") resetResult(); // no "Asking the model…": that request is dropped
  }
  if (items.some((item) => item.kind === "image" && !item.smooth)) items = []; // an example is replaced, not drawn on
  stroke = { kind: "stroke", width: PEN_WIDTHS[$("pen").value - 1], points: [point(event)] };
  items.push(stroke);
  redraw();
  lastLiveAt = Math.max(lastLiveAt, performance.now()); // no answer about a single dot
  markStale();
  offerFeedback(null);
});

pad.addEventListener("pointermove", (event) => {
  if (event.pointerId !== drawingPointer) return;
  // Coalesced events keep fast strokes smooth where the browser batches pointer moves.
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  extendStroke((events.length ? events : [event]).map(point));
  askLive();
});

function endStroke(event) {
  if (event.pointerId !== drawingPointer) return;
  drawingPointer = null;
  stroke = null;
  askAboutDrawing(true);
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function undo() {
  if (drawingPointer !== null || items.length === 0) return;
  items.pop();
  redraw();
  if (items.length === 0) clearAll();
  else askAboutDrawing(true);
}

function clearAll() {
  if (drawingPointer !== null) return;
  items = [];
  redraw();
  forget();
  resetResult();
  setState("empty");
  top3Out.textContent = "Draw a digit to see what the model thinks.";
}

undoButton.addEventListener("click", undo);
// The words follow the slider, also where the browser restored its value on reload.
const sayPenWidth = () => $("pen").setAttribute("aria-valuetext", PEN_NAMES[$("pen").value - 1]);
$("pen").addEventListener("input", sayPenWidth);
sayPenWidth();
$("clear").addEventListener("click", clearAll);
// Z by the letter it types (a French keyboard's Z is the key a US one calls W) and, on layouts without Latin letters
// (Russian, Greek), by its place, as other applications take Ctrl+Z there.
function isZ(event) {
  return /^[a-z]$/i.test(event.key) ? event.key.toLowerCase() === "z" : event.code === "KeyZ";
}

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") clearAll();
  else if ((event.ctrlKey || event.metaKey) && !event.shiftKey && isZ(event)) {
    event.preventDefault();
    undo();
  }
});

// --- asking the server ---------------------------------------------------------------------------

// Drops every answer still to come: the drawing they were about is gone.
function forget() {
  offerFeedback(null);
  seq += 1;
  clearTimeout(liveTimer);
  liveWanted = false;
  if (inFlight) inFlight.controller.abort();
  inFlight = null;
}

function askLive() {
  if (inFlight) {
    liveWanted = true;
    return;
  }
  clearTimeout(liveTimer);
  const wait = lastLiveAt + LIVE_MS - performance.now();
  if (wait > 0) liveTimer = setTimeout(askLive, wait);
  else askAboutDrawing(false);
}

function askAboutDrawing(final) {
  // While drawing, wait until the ink spans an eighth of the pad: a stroke just begun is no digit yet, and the
  // server would refuse it as blank. The answer at pen-up is always asked for.
  const pixels = padPixels(final ? 0 : 1 / 8);
  if (!pixels) return;
  if (!final) lastLiveAt = performance.now();
  ask({ headers: { "Content-Type": "application/json" }, body: JSON.stringify({ pixels }) }, final);
}

// Why a request got no answer, in the page's words: each browser has its own for a refused connection ("Failed to
// fetch", "NetworkError when attempting to fetch resource").
function noAnswer(error) {
  return error.name === "TimeoutError" ? `no answer within ${TIMEOUT_MS / 1000} s` : "the connection failed";
}

// An API response's JSON as { ok, body } or { ok: false, error }. An answer that is not the API's own (a proxy's
// error page, a JSON without its "error") is an error naming its status, never "undefined" or a parser's complaint.
// Reading the body stays in the caller's try: a timeout or a dropped connection meanwhile is "no answer".
async function readAnswer(response) {
  const text = await response.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: said below by its status
  }
  const own = body !== null && typeof body === "object" && !Array.isArray(body);
  if (response.ok && own) return { ok: true, body };
  if (!response.ok && own && typeof body.error === "string") return { ok: false, error: body.error };
  const status = `HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ""}`;
  return { ok: false, error: `the answer was not mnistkit serve's (${status}); is something between the page and the server?` };
}

// Sends one request to /api/predict; only the answer to the latest request is ever shown. A final request (pen-up,
// undo, an example or a file) aborts the one in flight, whose answer would be stale.
async function ask(request, final, fileName = null) {
  if (final) forget();
  else seq += 1;
  const mine = seq;
  const controller = new AbortController();
  inFlight = { seq: mine, controller };
  if (final) setState("pending");
  let answer;
  try {
    const signal = AbortSignal.any([controller.signal, AbortSignal.timeout(TIMEOUT_MS)]);
    answer = await readAnswer(await fetch("/api/predict", { method: "POST", ...request, signal }));
  } catch (error) {
    if (mine !== seq) return; // aborted for a newer request
    inFlight = null;
    if (final) {
      const why = error.name === "TimeoutError" ? "It may be busy: try again." : "Is mnistkit serve still running?";
      showProblem(`No answer from the server (${noAnswer(error)}). ${why}`);
    }
    return;
  }
  if (mine !== seq) return;
  inFlight = null;
  if (!answer.ok) {
    if (final) showProblem(fileName ? `${fileName}: ${answer.error}` : `The server could not use this drawing: ${answer.error}`);
  } else {
    showAnswer(answer.body, final);
    if (final) explain(answer.body.input, mine);
  }
  if (!final && liveWanted && drawingPointer !== null) {
    liveWanted = false;
    askLive();
  }
}

async function explain(input, mine) {
  try {
    const response = await fetch("/api/explain", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ pixels: input }),
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    const found = await readAnswer(response);
    if (mine !== seq || !found.ok) return;
    showExplanation(input, found.body);
  } catch (error) {
    // The answer is already shown; without an explanation its views simply stay empty.
  }
}

// --- showing answers -----------------------------------------------------------------------------

function setState(state) {
  result.dataset.state = state;
  result.setAttribute("aria-busy", String(state === "pending"));
  if (state === "pending" && digitOut.textContent === "?") {
    messageOut.hidden = confidenceOut.hidden = true;
    top3Out.hidden = false;
    top3Out.textContent = "Asking the model…";
  }
}

function percent(p) {
  return p > 0 && p < 0.0005 ? "<0.1%" : `${(p * 100).toFixed(1)}%`;
}

function showAnswer(answer, final) {
  const order = answer.probabilities.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]).slice(0, 3);
  const p = answer.probabilities[answer.digit];
  messageOut.hidden = true;
  confidenceOut.hidden = top3Out.hidden = false;
  if (answer.not_a_digit) {
    digitOut.textContent = "✗";
    confidenceOut.textContent = "This does not look like a digit.";
  } else {
    digitOut.textContent = answer.label;
    confidenceOut.textContent = p < 0.5 ? `${percent(p)} sure — try drawing it larger or more clearly.` : `${percent(p)} sure`;
  }
  top3Out.textContent = `Most likely ${order.map(([q, i]) => `${classes[i]} (${percent(q)})`).join(", then ")}.`;
  showProbabilities(answer.probabilities);
  showImage(seen, answer.input, (v) => [v * 255, v * 255, v * 255]);
  seen.setAttribute("aria-label", `The 28×28 image the model classified as ${answer.label}`);
  setState(final ? "final" : "live");
  if (final) {
    announce(answer.not_a_digit ? "Not a digit: this does not look like a digit." : `Prediction: ${answer.label}, ${percent(p)} sure.`);
    offerFeedback(answer);
  }
}

function showProblem(text) {
  offerFeedback(null);
  resetResult();
  confidenceOut.hidden = top3Out.hidden = true;
  messageOut.textContent = text;
  messageOut.hidden = false;
  setState("error");
  announce(text);
}

function announce(text) {
  announcer.textContent = text;
}

function resetResult() {
  digitOut.textContent = "?";
  confidenceOut.textContent = "";
  top3Out.textContent = "";
  messageOut.hidden = true;
  confidenceOut.hidden = top3Out.hidden = false;
  showProbabilities(null);
  [seen, saliency].forEach((canvas) => blank(canvas, 28, 28));
  blank(maps, maps.width, maps.height);
  seen.setAttribute("aria-label", "The 28×28 image the model classified: nothing yet");
  saliency.setAttribute("aria-label", "Saliency map: nothing yet");
  maps.setAttribute("aria-label", "Feature maps of the first convolution: nothing yet");
}

function blank(canvas, width, height) {
  const c = canvas.getContext("2d");
  c.fillStyle = "#000";
  c.fillRect(0, 0, width, height);
  canvas.classList.remove("stale");
}

// The saliency and feature maps belong to the last finished drawing; while a new one is drawn they are dimmed.
function markStale() {
  saliency.classList.add("stale");
  maps.classList.add("stale");
}

function buildBars() {
  bars.replaceChildren(...classes.map((name) => {
    const row = document.createElement("li");
    row.className = "bar-row";
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = name;
    const track = document.createElement("span");
    track.className = "track";
    track.setAttribute("aria-hidden", "true");
    const bar = document.createElement("span");
    bar.className = "bar";
    track.append(bar);
    const pct = document.createElement("span");
    pct.className = "pct";
    row.append(label, track, pct);
    return row;
  }));
  showProbabilities(null);
}

function showProbabilities(probabilities) {
  const best = probabilities ? probabilities.indexOf(Math.max(...probabilities)) : -1;
  bars.querySelectorAll(".bar-row").forEach((row, i) => {
    const p = probabilities ? probabilities[i] : 0;
    row.querySelector(".bar").style.width = `${(p * 100).toFixed(1)}%`;
    row.querySelector(".pct").textContent = probabilities ? percent(p) : "";
    row.classList.toggle("best", i === best);
  });
}

// Paints 28×28 values in [0, 1] onto a 28×28 canvas through colour(value) -> [r, g, b].
function showImage(canvas, values, colour) {
  const c = canvas.getContext("2d");
  const image = c.createImageData(28, 28);
  values.flat().forEach((value, i) => image.data.set([...colour(value), 255], i * 4));
  c.putImageData(image, 0, 0);
}

function showExplanation(input, found) {
  const flat = input.flat();
  // The input in grey, with the saliency laid over it from dark red (weak) to yellow (strong).
  const c = saliency.getContext("2d");
  const image = c.createImageData(28, 28);
  found.saliency.flat().forEach((v, i) => {
    const grey = flat[i] * 110;
    const heat = v;
    image.data.set([grey + (255 - grey) * heat, grey + (255 * v - grey) * heat, grey * (1 - heat), 255], i * 4);
  });
  c.putImageData(image, 0, 0);
  saliency.classList.remove("stale");
  saliency.setAttribute("aria-label", `Saliency map for ${found.label}: the image the model saw, with the pixels `
    + "that move its answer most in yellow");
  showMaps(found.feature_maps);
}

function showMaps(featureMaps) {
  const box = $("maps-box");
  box.hidden = featureMaps.length === 0;
  if (box.hidden) return;
  const [height, width] = [featureMaps[0].length, featureMaps[0][0].length];
  const columns = 8;
  const rows = Math.ceil(featureMaps.length / columns);
  maps.width = columns * (width + 1) - 1;
  maps.height = rows * (height + 1) - 1;
  const c = maps.getContext("2d");
  c.fillStyle = "#000";
  c.fillRect(0, 0, maps.width, maps.height);
  featureMaps.forEach((map, k) => {
    const image = c.createImageData(width, height);
    map.flat().forEach((v, i) => image.data.set([v, v, v, 255], i * 4));
    c.putImageData(image, (k % columns) * (width + 1), Math.floor(k / columns) * (height + 1));
  });
  maps.classList.remove("stale");
  maps.setAttribute("aria-label", `The ${featureMaps.length} feature maps of the first convolution, one tile each`);
}

// --- corrections ---------------------------------------------------------------------------------

// Shows the correction buttons for a final answer, or hides them (null). "Right" makes no sense for "not a digit".
function offerFeedback(answer) {
  keepFocusOnHiding(feedbackBox, feedbackOn && answer === null);
  offered = feedbackOn ? answer : null;
  feedbackBox.hidden = offered === null;
  rightButton.hidden = offered === null || offered.not_a_digit;
  tellFeedback("");
}

function buildFeedbackButtons() {
  $("feedback-digits").replaceChildren(...classes.map((name, label) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = name;
    button.setAttribute("aria-label", `It was ${name}`);
    button.addEventListener("click", () => sendCorrection(label));
    return button;
  }));
}

rightButton.addEventListener("click", () => {
  if (offered) sendCorrection(offered.digit);
});

// The drawing as base64 PNG (what canvas.toDataURL gives, without its data: prefix), scaled down until it is within
// the server's limit; null if even the smallest is not.
function drawingPng() {
  for (const side of DRAWING_SIDES) {
    const copy = document.createElement("canvas");
    copy.width = copy.height = side;
    copy.getContext("2d").drawImage(pad, 0, 0, side, side);
    const data = copy.toDataURL("image/png").split(",")[1];
    if (data.length / 4 * 3 <= MAX_DRAWING_BYTES) return data;
  }
  return null;
}

// Corrections go one at a time, in the order chosen: "It was 4" then "It was 9" stores 9, as the person meant,
// however the two requests would have raced.
let corrections = Promise.resolve();
let latestCorrection = 0;

function sendCorrection(label) {
  const answer = offered;
  if (!answer) return;
  const mine = ++latestCorrection;
  const png = drawingPng(); // now: by the time an earlier correction is stored, the canvas may hold another drawing
  tellFeedback("Saving…");
  // A failure is reported by storeCorrection; the catch keeps one that escapes it from stopping later corrections.
  corrections = corrections.then(() => storeCorrection(answer, label, png, mine)).catch(() => {});
}

async function storeCorrection(answer, label, png, mine) {
  const current = () => answer === offered && mine === latestCorrection; // else a later choice or drawing speaks
  const correction = {
    pixels: answer.input,
    label,
    predicted: answer.digit,
    confidence: answer.probabilities[answer.digit],
  };
  if (png) correction.drawing_png = png;
  let result;
  try {
    const response = await fetch("/api/feedback", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(correction),
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    result = await readAnswer(response);
  } catch (error) {
    if (current()) reportFeedback(`Not saved: no answer from the server (${noAnswer(error)}).`, true);
    return;
  }
  if (!current()) return; // the drawing changed meanwhile, or another choice was made; this one is stored all the same
  if (!result.ok) {
    reportFeedback(`Not saved: ${result.error}`, true);
    return;
  }
  const what = label === answer.digit && !answer.not_a_digit ? `the model was right, it was ${classes[label]}` : `it was ${classes[label]}`;
  reportFeedback(result.body.new ? `Saved: ${what}. Thank you.` : `Updated: ${what}.`, false);
}

function tellFeedback(text, problem = false) {
  feedbackStatus.textContent = text;
  feedbackStatus.classList.toggle("problem", problem);
}

// A correction's outcome: shown under its buttons and said by the live region.
function reportFeedback(text, problem) {
  tellFeedback(text, problem);
  announce(text);
}

// --- examples and image files --------------------------------------------------------------------

// A GET of the API: its JSON answer, or an Error with what the server said went wrong.
async function getJson(url) {
  const answer = await readAnswer(await fetch(url));
  if (!answer.ok) throw new Error(answer.error);
  return answer.body;
}

async function loadExamples() {
  const strip = $("examples");
  try {
    const { examples } = await getJson("/api/examples");
    strip.replaceChildren(...examples.map((example) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "example";
      button.setAttribute("aria-label", `Example: a ${example.label} from the MNIST test set (image ${example.index})`);
      const picture = document.createElement("canvas");
      picture.width = picture.height = 28;
      showImage(picture, example.pixels.map((row) => row.map((v) => 1 - v / 255)), (v) => [v * 255, v * 255, v * 255]);
      button.append(picture);
      button.addEventListener("click", () => useExample(example, picture));
      return button;
    }));
  } catch (error) {
    strip.textContent = `Could not load the examples (${error.message}).`;
  }
}

function useExample(example, picture) {
  items = [{ kind: "image", source: picture, smooth: false }];
  redraw();
  // The test image itself, white ink on black: the model sees exactly it, as in `mnistkit evaluate`.
  const pixels = example.pixels.map((row) => row.map((v) => v / 255));
  ask({ headers: { "Content-Type": "application/json" }, body: JSON.stringify({ pixels }) }, true);
}

// One clear line about a file the page will not send, or null for a file worth sending.
function fileProblem(file) {
  if (file.size === 0) return `${file.name} is empty: choose a PNG, JPEG or WebP image of one digit.`;
  if (!FILE_TYPES.includes(file.type)) {
    return `${file.name} is not a PNG, JPEG or WebP image: choose a picture of one digit in one of those formats.`;
  }
  if (file.size > MAX_FILE_BYTES) {
    return `${file.name} is ${(file.size / 2 ** 20).toFixed(1)} MiB: images up to 4 MiB are accepted; scale it down.`;
  }
  return null;
}

async function useFile(file) {
  if (drawingPointer !== null) return;
  const problem = fileProblem(file);
  if (problem) {
    forget();
    showProblem(problem);
    return;
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch (error) {
    forget();
    showProblem(`${file.name} cannot be read as an image: it may be damaged. Choose another file.`);
    return;
  }
  items = [{ kind: "image", source: bitmap, smooth: true }];
  redraw();
  const form = new FormData();
  form.append("image", file, file.name);
  ask({ body: form }, true, file.name);
}

$("file").addEventListener("change", (event) => {
  const [file] = event.target.files;
  event.target.value = ""; // choosing the same file again is a new request
  if (file) useFile(file);
});

// Files dropped anywhere are caught, so a missed drop does not navigate away from the page.
const drop = $("drop");
document.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.toggle("dragging", drop.contains(event.target));
});
document.addEventListener("dragleave", (event) => {
  if (!event.relatedTarget) drop.classList.remove("dragging");
});
document.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("dragging");
  const files = [...(event.dataTransfer ? event.dataTransfer.files : [])];
  if (files.length > 1) {
    forget();
    showProblem("Drop one image at a time.");
  } else if (files.length === 1) {
    useFile(files[0]);
  }
});

// --- theme and start-up --------------------------------------------------------------------------

const systemDark = window.matchMedia("(prefers-color-scheme: dark)");
const themeButton = $("theme");

let chosenTheme = null; // "light" or "dark" once the toggle is used (remembered); null follows the system
try {
  chosenTheme = localStorage.getItem("mnistkit-theme");
} catch (error) {
  // storage disabled: follow the system
}

function applyTheme() {
  const dark = chosenTheme ? chosenTheme === "dark" : systemDark.matches;
  document.documentElement.dataset.theme = dark ? "dark" : "light";
  themeButton.setAttribute("aria-pressed", String(dark));
}

themeButton.addEventListener("click", () => {
  chosenTheme = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  try {
    localStorage.setItem("mnistkit-theme", chosenTheme);
  } catch (error) {
    // applied, not remembered
  }
  applyTheme();
});
systemDark.addEventListener("change", applyTheme);

async function loadModelInfo() {
  const info = $("model-info");
  try {
    const model = await getJson("/api/model");
    classes = model.classes;
    buildBars();
    feedbackOn = model.feedback === true && classes.length <= 10; // corrections are labelled 0-9
    buildFeedbackButtons();
    const accuracy = model.test_accuracy == null ? "test accuracy unknown" : `${(model.test_accuracy * 100).toFixed(2)}% test accuracy`;
    info.textContent = `Model: ${model.model} (${model.source}), ${model.parameters.toLocaleString("en")} parameters, ${accuracy}`;
  } catch (error) {
    info.textContent = `Could not read the model's description (${error.message}).`;
  }
}

applyTheme();
redraw();
fitPad();
new ResizeObserver(fitPad).observe(pad);
fitPadOnPixelRatioChange();
buildBars();
resetResult();
setState("empty");
loadModelInfo();
loadExamples();
