// sam-explain's live explorer: the page side of sam_explain/explorer/widget.py (an anywidget).
// Python renders the picture (numpy); this draws it on a canvas and sends back what the learner does:
//   click on the image        a foreground point (shift- or alt-click, or the "background" box: background)
//   drag on the image         a box
//   click on a mask           show that mask's token
//   the controls              attention kind, layer, head (or mean), token, outline; undo, reset
// Nothing is fetched: no import, no URL. The canvas's backing store has the picture's pixels, which
// Python renders at the display's device pixel ratio, so the picture is drawn one to one (sharp).

const DRAG_PX = 5; // CSS pixels a pointer must move to make a box rather than a click

function make(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function labelled(text, control) {
  const label = make("label", "se-control");
  label.append(make("span", "se-control-name", text), control);
  return label;
}

function fillSelect(select, options, value) {
  // options: [[label, value], ...]; values may be numbers or strings, kept as JSON in the DOM
  const want = JSON.stringify(options);
  if (select.dataset.options !== want) {
    select.replaceChildren(
      ...options.map(([label, v]) => {
        const option = make("option", "", label);
        option.value = JSON.stringify(v);
        return option;
      }),
    );
    select.dataset.options = want;
  }
  select.value = JSON.stringify(value);
}

function render({ model, el }) {
  const root = make("div", "se-live");
  el.append(root);

  const bar = make("div", "se-bar");
  const kind = make("select", "se-kind");
  const layer = make("select", "se-layer");
  const head = make("select", "se-head");
  const token = make("select", "se-token");
  const background = make("input", "se-background");
  background.type = "checkbox";
  for (const [control, key] of [[kind, "kind"], [layer, "layer"], [head, "head"], [token, "token"]]) {
    control.dataset.key = key;
  }
  const outline = make("input", "se-outline");
  outline.type = "checkbox";
  const undo = make("button", "se-undo", "undo");
  const reset = make("button", "se-reset", "reset");
  bar.append(
    labelled("attention", kind), labelled("layer", layer), labelled("head", head), labelled("token", token),
    labelled("outline 50%", outline), labelled("background point", background), undo, reset,
  );

  const stage = make("div", "se-stage");
  const canvas = make("canvas", "se-canvas");
  const labels = make("div", "se-labels");
  stage.append(canvas, labels);

  const legend = make("div", "se-legend");
  const legendBar = make("span", "se-legend-bar");
  const legendText = make("span", "se-legend-text");
  legend.append(make("span", "", "0"), legendBar, legendText);

  const caption = make("div", "se-caption");
  const status = make("div", "se-status");
  const trace = make("details", "se-trace");
  const traceBody = make("div", "se-trace-body", "computed when opened");
  trace.append(make("summary", "", "Shape trace of the last run"), traceBody);
  root.append(bar, stage, legend, caption, status, trace);

  const ctx = canvas.getContext("2d");
  let shown = null; // the ImageData on the canvas, for redrawing under a drag rectangle
  let drag = null;

  function send(message) {
    root.classList.add("se-busy");
    status.textContent = "running...";
    model.send(message);
  }

  function pictureBytes() {
    const value = model.get("picture");
    if (!value) return null;
    if (value instanceof DataView) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
    if (value instanceof ArrayBuffer) return new Uint8Array(value);
    if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
    return null;
  }

  function draw() {
    const meta = model.get("meta") || {};
    const rgb = pictureBytes();
    if (!meta.width || !rgb || rgb.length !== meta.width * meta.height * 3) return;
    const w = meta.width, h = meta.height, ratio = meta.ratio || 1;
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
    canvas.style.width = `${w / ratio}px`;
    canvas.style.height = `${h / ratio}px`;
    const image = ctx.createImageData(w, h);
    const out = image.data;
    for (let i = 0, j = 0; i < rgb.length; i += 3, j += 4) {
      out[j] = rgb[i];
      out[j + 1] = rgb[i + 1];
      out[j + 2] = rgb[i + 2];
      out[j + 3] = 255;
    }
    ctx.putImageData(image, 0, 0);
    shown = image;
    canvas.dataset.seq = String(meta.seq);
    canvas.classList.toggle("se-clickable", !!meta.clickable);

    fillSelect(kind, meta.kinds, meta.kind);
    fillSelect(layer, meta.layers, meta.layer);
    fillSelect(head, meta.heads, meta.head);
    fillSelect(token, meta.tokens.map((name) => [name, name]), meta.token);
    outline.checked = meta.outline !== null && meta.outline !== undefined;
    undo.disabled = !meta.can_undo;

    const names = [];
    if (meta.matrix) {
      // the T x T matrix's token names: rows (queries) at its left, columns (keys) under it
      const { x, y, cell, names: tokens } = meta.matrix;
      tokens.forEach((name, i) => {
        const row = make("span", "se-row-name", name);
        row.style.right = `${(w - x) / ratio + 4}px`;
        row.style.top = `${(y + (i + 0.5) * cell) / ratio - 7}px`;
        const column = make("span", "se-column-name", name);
        column.style.left = `${(x + (i + 0.5) * cell) / ratio - 7}px`;
        column.style.top = `${(y + tokens.length * cell) / ratio + 4}px`;
        names.push(row, column);
      });
    }
    labels.replaceChildren(
      ...names,
      ...meta.thumbs.map(([x, y, tw, th], k) => {
        const iou = meta.ious[k];
        const text = iou === undefined ? `${meta.thumb_tokens[k]}: no mask yet`
          : `${meta.thumb_tokens[k]} IoU ${iou.toFixed(3)}${k === meta.best ? " (best)" : ""}`;
        const badge = make("span", "se-iou", text);
        badge.dataset.token = meta.thumb_tokens[k];
        badge.style.left = `${x / ratio + 3}px`;
        badge.style.top = `${(y + th) / ratio - 19}px`;
        return badge;
      }),
    );
    legendBar.style.background = `linear-gradient(to right, ${meta.legend.join(", ")})`;
    legendText.textContent = meta.limit ? `${meta.limit}; brighter cells take the top colour` : "";
    caption.textContent = meta.caption;
    status.textContent = meta.message || `${meta.label}. ${meta.points} point(s)${meta.has_box ? " and a box" : ""}. `
      + (meta.clickable ? "Click: foreground point; shift-click: background; drag: a box; click a mask: its token."
        : "Choose token-to-image or image-to-token to click on the image.");
    status.classList.toggle("se-refused", !!meta.message);
    root.classList.remove("se-busy");
    showTrace();
  }

  function showTrace() {
    const html = model.get("trace_html");
    if (html) {
      traceBody.innerHTML = html; // our own table, escaped in Python
    } else if (trace.open) {
      traceBody.textContent = "computing...";
      model.send({ type: "trace" });
    } else {
      traceBody.textContent = "computed when opened";
    }
  }

  function where(event) {
    // the pointer in picture pixels
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * (canvas.width / box.width), (event.clientY - box.top) * (canvas.height / box.height)];
  }

  function inside([px, py], [x, y, w, h]) {
    return px >= x && px < x + w && py >= y && py < y + h;
  }

  function toImage([px, py]) {
    // picture pixels on the main panel -> original image pixels
    const meta = model.get("meta");
    const [x, y, w, h] = meta.main;
    const [h0, w0] = meta.image_size;
    return [Math.min(w0, Math.max(0, ((px - x) * w0) / w)), Math.min(h0, Math.max(0, ((py - y) * h0) / h))];
  }

  function onDown(event) {
    const meta = model.get("meta");
    const p = where(event);
    if (!meta || !meta.clickable || !inside(p, meta.main)) {
      drag = null;
      return;
    }
    drag = { start: p, now: p, moved: false };
    canvas.setPointerCapture(event.pointerId);
    event.preventDefault();
  }

  function onMove(event) {
    if (!drag) return;
    const meta = model.get("meta");
    const [x, y, w, h] = meta.main;
    const p = where(event);
    drag.now = [Math.min(x + w, Math.max(x, p[0])), Math.min(y + h, Math.max(y, p[1]))];
    const moved = Math.hypot(drag.now[0] - drag.start[0], drag.now[1] - drag.start[1]) / (meta.ratio || 1);
    drag.moved = drag.moved || moved > DRAG_PX;
    if (drag.moved && shown) {
      ctx.putImageData(shown, 0, 0);
      ctx.save();
      ctx.strokeStyle = "#ffa000";
      ctx.lineWidth = 2 * (meta.ratio || 1);
      ctx.setLineDash([6 * (meta.ratio || 1), 4 * (meta.ratio || 1)]);
      ctx.strokeRect(drag.start[0], drag.start[1], drag.now[0] - drag.start[0], drag.now[1] - drag.start[1]);
      ctx.restore();
    }
  }

  function onUp(event) {
    const meta = model.get("meta");
    const p = where(event);
    if (!drag) {
      // a click on a mask panel shows its token
      const k = meta ? meta.thumbs.findIndex((rect) => inside(p, rect)) : -1;
      if (k >= 0) send({ type: "select", token: meta.thumb_tokens[k] });
      return;
    }
    const d = drag;
    drag = null;
    if (d.moved) {
      const [x0, y0] = toImage(d.start);
      const [x1, y1] = toImage(d.now);
      if (Math.abs(x1 - x0) >= 1 && Math.abs(y1 - y0) >= 1) send({ type: "box", x0, y0, x1, y1 });
      else if (shown) ctx.putImageData(shown, 0, 0);
      return;
    }
    const [x, y] = toImage(d.start);
    const label = event.shiftKey || event.altKey || background.checked ? 0 : 1;
    send({ type: "click", x, y, label });
  }

  function onSelect(event) {
    // only the control that changed: Python keeps the others, or picks a layer the new kind has
    const control = event.target;
    const message = { type: "select" };
    if (control === outline) message.outline = outline.checked ? 0.5 : null;
    else message[control.dataset.key] = JSON.parse(control.value);
    send(message);
  }

  canvas.addEventListener("pointerdown", onDown);
  canvas.addEventListener("pointermove", onMove);
  canvas.addEventListener("pointerup", onUp);
  for (const control of [kind, layer, head, token, outline]) control.addEventListener("change", onSelect);
  undo.addEventListener("click", () => send({ type: "undo" }));
  reset.addEventListener("click", () => send({ type: "reset" }));
  trace.addEventListener("toggle", showTrace);
  model.on("change:picture", draw);
  model.on("change:meta", draw);
  model.on("change:trace_html", showTrace);

  const ratio = window.devicePixelRatio || 1;
  if (Math.abs((model.get("pixel_ratio") || 1) - ratio) > 1e-6) {
    model.set("pixel_ratio", ratio);
    model.save_changes();
  }
  draw();

  return () => {
    model.off("change:picture", draw);
    model.off("change:meta", draw);
    model.off("change:trace_html", showTrace);
  };
}

export default { render };
