// The drawing page: pointer strokes on a canvas, sent as a PNG to /api/predict (debounced while drawing),
// answered with the probabilities (bars) and the 28×28 image the model saw.
"use strict";

const DEBOUNCE_MS = 150; // wait this long after the last stroke change before asking the server...
const MAX_WAIT_MS = 400; // ...but during a long stroke, ask at least this often
const INK = "#000";
const PAPER = "#fff";
const UPLOAD_SIDE = 280; // the drawing is sent at this size: plenty for a 20-pixel digit, and small

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const seen = document.getElementById("seen").getContext("2d");
const bars = document.getElementById("bars");
const digitOut = document.getElementById("digit");
const confidenceOut = document.getElementById("confidence");
const statusOut = document.getElementById("status");

let classes = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
let hasInk = false;
let drawingPointer = null; // id of the pointer drawing now, so a second finger does not scribble
let last = null; // previous point of the current stroke
let timer = null;
let lastAsked = 0; // when the last request was sent (performance.now())
let inFlight = false;
let dirty = false; // the drawing changed since the request in flight was sent
let generation = 0; // bumped by Clear: answers about an older drawing are dropped

function clearPad() {
  ctx.fillStyle = PAPER;
  ctx.fillRect(0, 0, pad.width, pad.height);
  // Stroke width relative to the canvas, so a digit drawn across it has MNIST's stroke-to-size ratio.
  ctx.lineWidth = pad.width / 14;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.strokeStyle = INK;
  ctx.fillStyle = INK;
}

// The canvas holds as many pixels as the screen shows (CSS size × devicePixelRatio), so strokes stay sharp on
// any screen; when its size changes (rotation, window resize), the drawing so far is scaled onto the new one.
function fitPad() {
  const side = Math.max(1, Math.round(pad.getBoundingClientRect().width * (window.devicePixelRatio || 1)));
  if (side === pad.width) return;
  const old = document.createElement("canvas");
  old.width = pad.width;
  old.height = pad.height;
  old.getContext("2d").drawImage(pad, 0, 0);
  if (last) last = { x: last.x * side / pad.width, y: last.y * side / pad.height }; // a stroke going on
  pad.width = pad.height = side;
  clearPad();
  if (hasInk) ctx.drawImage(old, 0, 0, side, side);
}

function uploadBlob() {
  const small = document.createElement("canvas");
  small.width = small.height = UPLOAD_SIDE;
  const smallCtx = small.getContext("2d");
  smallCtx.imageSmoothingQuality = "high";
  smallCtx.drawImage(pad, 0, 0, UPLOAD_SIDE, UPLOAD_SIDE);
  return new Promise((resolve) => small.toBlob(resolve, "image/png"));
}

function buildBars() {
  bars.replaceChildren(...classes.map((name, i) => {
    const row = document.createElement("li");
    row.className = "bar-row";
    row.dataset.index = i;
    row.innerHTML = '<span class="label"></span><span class="track"><span class="bar"></span></span><span class="pct"></span>';
    row.querySelector(".label").textContent = name;
    return row;
  }));
  showProbabilities(null);
}

function showProbabilities(probabilities) {
  const best = probabilities ? probabilities.indexOf(Math.max(...probabilities)) : -1;
  bars.querySelectorAll(".bar-row").forEach((row, i) => {
    const p = probabilities ? probabilities[i] : 0;
    row.querySelector(".bar").style.width = `${(p * 100).toFixed(1)}%`;
    row.querySelector(".pct").textContent = probabilities ? `${(p * 100).toFixed(1)}%` : "–";
    row.classList.toggle("best", i === best);
    row.setAttribute("aria-label", `${classes[i]}: ${probabilities ? (p * 100).toFixed(1) + " percent" : "no prediction"}${i === best ? ", most likely" : ""}`);
  });
}

function showSeen(input) {
  const image = seen.createImageData(28, 28);
  input.flat().forEach((value, i) => {
    const level = Math.round(value * 255);
    image.data.set([level, level, level, 255], i * 4);
  });
  seen.putImageData(image, 0, 0);
}

function resetResult(message) {
  digitOut.textContent = "–";
  confidenceOut.textContent = "";
  statusOut.textContent = message;
  showProbabilities(null);
  seen.fillStyle = "#000";
  seen.fillRect(0, 0, 28, 28);
}

// --- drawing -------------------------------------------------------------------------------------

function point(event) {
  const box = pad.getBoundingClientRect();
  return { x: (event.clientX - box.left) * pad.width / box.width, y: (event.clientY - box.top) * pad.height / box.height };
}

function dot(p) {
  ctx.beginPath();
  ctx.arc(p.x, p.y, ctx.lineWidth / 2, 0, 2 * Math.PI);
  ctx.fill();
}

function lineTo(p) {
  ctx.beginPath();
  ctx.moveTo(last.x, last.y);
  ctx.lineTo(p.x, p.y);
  ctx.stroke();
  last = p;
}

pad.addEventListener("pointerdown", (event) => {
  if (drawingPointer !== null || (event.pointerType === "mouse" && event.button !== 0)) return;
  event.preventDefault();
  drawingPointer = event.pointerId;
  pad.setPointerCapture(event.pointerId);
  last = point(event);
  dot(last);
  hasInk = true;
  // A new stroke after a pause starts the MAX_WAIT_MS clock, rather than asking about a single dot at once.
  lastAsked = Math.max(lastAsked, performance.now() - MAX_WAIT_MS);
  schedule();
});

pad.addEventListener("pointermove", (event) => {
  if (event.pointerId !== drawingPointer) return;
  // Coalesced events keep fast strokes smooth where the browser batches pointer moves.
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  (events.length ? events : [event]).forEach((e) => lineTo(point(e)));
  schedule();
});

function endStroke(event) {
  if (event.pointerId !== drawingPointer) return;
  drawingPointer = null;
  last = null;
  schedule();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function clearAll() {
  generation += 1;
  clearTimeout(timer);
  hasInk = false;
  dirty = false;
  clearPad();
  resetResult("Draw a digit to see what the model thinks.");
}
document.getElementById("clear").addEventListener("click", clearAll);
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") clearAll();
});

// --- asking the server ---------------------------------------------------------------------------

function schedule() {
  clearTimeout(timer);
  const overdue = performance.now() - lastAsked > MAX_WAIT_MS;
  timer = setTimeout(predict, overdue ? 0 : DEBOUNCE_MS);
}

async function predict() {
  if (!hasInk) return;
  if (inFlight) { // one request at a time; the latest drawing is sent when this one is answered
    dirty = true;
    return;
  }
  inFlight = true;
  dirty = false;
  lastAsked = performance.now();
  const sent = generation;
  try {
    const blob = await uploadBlob();
    const form = new FormData();
    form.append("image", blob, "drawing.png");
    const response = await fetch("/api/predict", { method: "POST", body: form });
    const answer = await response.json();
    if (sent !== generation) return;
    if (!response.ok) {
      resetResult(`The server could not use this drawing: ${answer.error}`);
      return;
    }
    const p = answer.probabilities[answer.digit];
    digitOut.textContent = answer.label;
    confidenceOut.textContent = `${(p * 100).toFixed(1)}% sure`;
    statusOut.textContent = p < 0.5 ? "Not sure — try drawing it larger or more clearly." : "";
    showProbabilities(answer.probabilities);
    showSeen(answer.input);
  } catch (error) {
    if (sent === generation) resetResult(`No answer from the server (${error.message}); is mnistkit serve still running?`);
  } finally {
    inFlight = false;
    if (dirty && sent === generation) predict();
  }
}

async function loadModelInfo() {
  const info = document.getElementById("model-info");
  try {
    const model = await (await fetch("/api/model")).json();
    classes = model.classes;
    buildBars();
    const accuracy = model.test_accuracy == null ? "test accuracy unknown" : `${(model.test_accuracy * 100).toFixed(2)}% test accuracy`;
    info.textContent = `Model: ${model.model} (${model.source}), ${model.parameters.toLocaleString("en")} parameters, ${accuracy}`;
  } catch (error) {
    info.textContent = `Could not read the model's description (${error.message}).`;
  }
}

clearPad();
fitPad();
new ResizeObserver(fitPad).observe(pad);
buildBars();
resetResult("Draw a digit to see what the model thinks.");
loadModelInfo();
