// deepdream-live's control page. Everything it shows comes from the show over one websocket:
// the parameter registry (names, kinds, ranges, units, curves), the layers of the running model,
// the current values, presets and status. Nothing here lists parameters of its own.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const SHOW_GROUP = ["pause", "freeze", "reset"];  // drawn as buttons in the Show panel
  const PRESET_GROUP = ["morph_time"];  // drawn beside the presets it affects
  const SKIP = ["objective"];  // has its own panel (layer, channel, objective)
  const SOUND_GROUP = ["tap"];  // drawn in the Sound panel
  const METERS = ["level", "low", "mid", "high", "onset", "beat", "phase", "confidence"];
  const METER_TOP = { level: 0.5, low: 3, mid: 3, high: 3 };  // bands: 1 is "as loud as usual"
  let sound = null;  // the show's sound description, or null when it has none

  let ws = null;
  let retry = 1000;
  let params = {};  // name -> description from the show
  let layers = [];
  let current = {};  // name -> value as the show has it
  const controls = {};  // name -> {update(value, norm), row}
  let pendingNorm = {};  // name -> fader position waiting for the next animation frame
  let framePending = false;
  let previewUrl = null;

  // ----- connection
  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(`${scheme}//${location.host}/ws`);
    ws.binaryType = "blob";
    setConnection("connecting", "connecting…");
    ws.onopen = () => { retry = 1000; };
    ws.onmessage = (event) => {
      if (typeof event.data === "string") handle(JSON.parse(event.data));
      else showFrame(event.data);
    };
    ws.onclose = (event) => {
      ws = null;
      if (event.code === 1008) banner(`The show closed this page: ${event.reason || "policy"}. Reload to reconnect.`);
      setConnection("lost", event.code === 1001 ? "show stopped — retrying" : "disconnected — retrying");
      if (event.code !== 1008) setTimeout(connect, retry);
      retry = Math.min(retry * 2, 8000);
    };
  }

  function send(message) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
  }

  function setConnection(state, text) {
    const el = $("connection");
    el.className = `connection ${state}`;
    el.textContent = text;
  }

  function banner(text) {
    const el = $("banner");
    el.textContent = text;
    el.hidden = !text;
  }

  let toastTimer = null;
  function toast(text, good) {
    const el = $("toast");
    el.textContent = text;
    el.className = good ? "toast good" : "toast";
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.hidden = true; }, good ? 2500 : 6000);
  }

  // ----- messages from the show
  function handle(msg) {
    switch (msg.type) {
      case "hello": hello(msg); break;
      case "values": applyValues(msg.values, msg.norms); break;
      case "status": renderStatus(msg.status); break;
      case "presets": renderPresets(msg.names); break;
      case "error": refused(msg.message, msg.about); break;
      case "notice": notice(msg.message); break;
      case "audio": renderSound(msg.audio); break;
      case "audio_mapping": renderMapping(msg.mapping); break;
      default: break;
    }
  }

  function hello(msg) {
    params = {};
    for (const p of msg.params) params[p.name] = p;
    layers = msg.layers;
    buildControls(msg.params);
    buildLayers(msg.layers);
    applyValues(msg.values, msg.norms);
    renderPresets(msg.presets);
    renderStatus(msg.status);
    buildSound(msg.audio);
    setConnection("live", `live · ${msg.model}`);
    banner("");
    const wanted = $("preview-on").checked && !document.hidden && msg.preview.available;
    setPreview(wanted);
  }

  function applyValues(values, norms) {
    for (const [name, value] of Object.entries(values)) {
      current[name] = value;
      const control = controls[name];
      if (control) control.update(value, norms ? norms[name] : undefined);
      if (name === "layer") showLayer(value);
      if (name === "channel") showChannel(value);
      if (name === "objective") {
        showObjective(value);
        $("dream-message").textContent = "";
      }
      document.dispatchEvent(new CustomEvent("ddl:value", { detail: { name, value } }));
    }
  }

  // ----- controls, generated from the registry's description
  function rangeText(p) {
    if (p.kind !== "float" && p.kind !== "int") return "";
    const unit = p.unit ? ` ${p.unit}` : "";
    return `${p.lo}–${p.hi}${unit}${p.curve === "log" ? ", log fader" : ""}`;
  }

  function decimals(p) {
    if (p.kind === "int") return 0;
    const span = p.hi - p.lo;
    return span <= 0.2 ? 4 : span <= 10 ? 2 : 1;
  }

  function buildControls(list) {
    for (const id of ["params", "show-controls", "preset-controls", "sound-controls"]) $(id).textContent = "";
    for (const key of Object.keys(controls)) delete controls[key];
    for (const p of list) {
      if (SKIP.includes(p.name)) continue;
      if (SHOW_GROUP.includes(p.name)) {
        controls[p.name] = showButton(p);
        continue;
      }
      const parent = PRESET_GROUP.includes(p.name) ? $("preset-controls")
        : SOUND_GROUP.includes(p.name) ? $("sound-controls") : $("params");
      if (p.kind === "float" || p.kind === "int") controls[p.name] = fader(p, parent);
      else if (p.kind === "bool") controls[p.name] = toggle(p, parent);
      else if (p.kind === "trigger") controls[p.name] = trigger(p, parent);
      else if (p.kind === "choice") controls[p.name] = choice(p, parent);
      else controls[p.name] = text(p, parent);
    }
  }

  function row(p, parent, extraClass) {
    const el = document.createElement("div");
    el.className = `param${extraClass ? " " + extraClass : ""}`;
    el.dataset.param = p.name;
    const name = document.createElement("div");
    name.className = "name";
    const label = document.createElement("label");
    label.htmlFor = `p-${p.name}`;
    label.textContent = p.name.replace(/_/g, " ");
    name.append(label);
    const range = rangeText(p);
    if (range) {
      const r = document.createElement("span");
      r.className = "range";
      r.textContent = range;
      name.append(r);
    }
    el.append(name);
    parent.append(el);
    const help = document.createElement("div");
    help.className = "help";
    help.textContent = p.help;
    return { el, help, label };
  }

  function fader(p, parent) {
    const { el, help } = row(p, parent);
    const slider = document.createElement("input");
    slider.type = "range";
    slider.min = "0";
    slider.max = "1000";
    slider.step = "1";
    slider.id = `p-${p.name}-fader`;
    slider.setAttribute("aria-label", `${p.name.replace(/_/g, " ")} fader (${rangeText(p)})`);
    const number = document.createElement("input");
    number.type = "number";
    number.id = `p-${p.name}`;
    number.min = String(p.lo);
    number.max = String(p.hi);
    number.step = p.kind === "int" ? "1" : "any";
    number.inputMode = p.kind === "int" ? "numeric" : "decimal";
    if (p.unit) number.title = p.unit;
    el.append(slider, number, help);
    let dragging = false;
    slider.addEventListener("pointerdown", () => { dragging = true; });
    const release = () => { dragging = false; };
    slider.addEventListener("pointerup", release);
    slider.addEventListener("pointercancel", release);
    slider.addEventListener("input", () => {
      clearRefusal(p.name);
      pendingNorm[p.name] = Number(slider.value) / 1000;
      if (!framePending) {
        framePending = true;
        requestAnimationFrame(flushFaders);  // at most one message per fader per screen frame
      }
    });
    slider.addEventListener("change", release);
    number.addEventListener("change", () => {
      if (number.value === "") return;
      clearRefusal(p.name);
      send({ op: "set", name: p.name, value: Number(number.value) });
    });
    return {
      row: el,
      update(value, norm) {
        if (document.activeElement !== number) number.value = String(Number(Number(value).toFixed(decimals(p))));
        if (!dragging && norm !== undefined) slider.value = String(Math.round(norm * 1000));
      },
    };
  }

  function flushFaders() {
    framePending = false;
    for (const [name, norm] of Object.entries(pendingNorm)) send({ op: "set", name, norm });
    pendingNorm = {};
  }

  function toggle(p, parent) {
    const { el, help } = row(p, parent, "switch");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.id = `p-${p.name}`;
    box.className = "toggle";
    el.append(box, help);
    box.addEventListener("change", () => { clearRefusal(p.name); send({ op: "set", name: p.name, value: box.checked }); });
    return { row: el, update(value) { box.checked = Boolean(value); } };
  }

  function trigger(p, parent) {
    const { el, help, label } = row(p, parent, "switch");
    const button = document.createElement("button");
    button.type = "button";
    button.id = `p-${p.name}`;
    button.textContent = p.name.replace(/_/g, " ");
    label.remove();
    el.append(button, help);
    button.addEventListener("click", () => send({ op: "set", name: p.name, value: true }));
    return { row: el, update() {} };
  }

  function choice(p, parent) {
    const { el, help } = row(p, parent);
    const select = document.createElement("select");
    select.id = `p-${p.name}`;
    for (const c of p.choices) select.add(new Option(c, c));
    el.append(select, help);
    select.addEventListener("change", () => send({ op: "set", name: p.name, value: select.value }));
    return { row: el, update(value) { select.value = value; } };
  }

  function text(p, parent) {
    const { el, help } = row(p, parent);
    const input = document.createElement("input");
    input.type = "text";
    input.id = `p-${p.name}`;
    el.append(input, help);
    input.addEventListener("change", () => send({ op: "set", name: p.name, value: input.value }));
    return { row: el, update(value) { if (document.activeElement !== input) input.value = value; } };
  }

  function showButton(p) {
    const button = document.createElement("button");
    button.type = "button";
    button.id = `p-${p.name}`;
    button.textContent = p.name;
    button.title = p.help;
    $("show-controls").append(button);
    if (p.kind === "trigger") {
      button.addEventListener("click", () => send({ op: "set", name: p.name, value: true }));
      return { row: button, update() {} };
    }
    button.setAttribute("aria-pressed", "false");
    button.addEventListener("click", () => send({ op: "set", name: p.name, value: !current[p.name] }));
    return {
      row: button,
      update(value) {
        button.classList.toggle("on", Boolean(value));
        button.setAttribute("aria-pressed", value ? "true" : "false");
      },
    };
  }

  // ----- refusals and notices
  function refused(message, about) {
    const control = about && controls[about];
    if (about === "preset/load" || about === "preset/save") {
      const el = $("preset-message");
      el.textContent = message;
      el.className = "message bad";
    } else if ((about && about.startsWith("audio/")) || /audio|sound/.test(message)) {
      const el = $("sound-message");
      el.textContent = message;
      el.className = "message bad";
    } else if (about === "objective") {
      const el = $("dream-message");
      el.textContent = message;
      el.className = "message bad";
    } else if (control && control.row.classList.contains("param")) {
      clearRefusal(about);
      const line = document.createElement("div");
      line.className = "error";
      line.setAttribute("role", "alert");
      line.textContent = message;
      control.row.classList.add("refused");
      control.row.append(line);
      const value = current[about];
      if (value !== undefined) control.update(value, undefined);  // back to what the show has
    }
    toast(message, false);
  }

  function clearRefusal(name) {
    const control = controls[name];
    if (!control) return;
    control.row.classList.remove("refused");
    for (const el of control.row.querySelectorAll(".error")) el.remove();
  }

  function notice(message) {
    if (message.startsWith("preset ")) {
      const el = $("preset-message");
      el.textContent = message;
      el.className = "message good";
    }
    toast(message, true);
  }

  // ----- dream: layer, channel, objective
  function buildLayers(list) {
    const select = $("layer");
    select.textContent = "";
    for (const layer of list) select.add(new Option(`${layer.number}  ${layer.name} (${layer.channels} channels)`, layer.name));
  }

  function showLayer(name) {
    if (name) $("layer").value = name;
    const layer = layers.find((l) => l.name === name);
    const channel = $("channel");
    if (layer) {
      channel.max = String(layer.channels - 1);
      $("channel-range").textContent = `0–${layer.channels - 1} of ${layer.name}`;
    }
  }

  function showChannel(value) {
    const channel = $("channel");
    if (document.activeElement !== channel) channel.value = value === null || value === undefined ? "" : String(value);
  }

  function showObjective(value) {
    const input = $("objective");
    if (document.activeElement !== input) input.value = value;
  }

  // ----- presets
  function renderPresets(names) {
    const select = $("preset-list");
    const chosen = select.value;
    select.textContent = "";
    if (!names.length) select.add(new Option("(none saved yet)", ""));
    for (const name of names) select.add(new Option(name, name));
    if (names.includes(chosen)) select.value = chosen;
  }

  // ----- status
  function renderStatus(status) {
    const fields = [
      ["state", status.state],
      ["fps", status.fps !== undefined ? Number(status.fps).toFixed(1) : undefined],
      ["dream fps", status.dream_fps !== undefined ? Number(status.dream_fps).toFixed(1) : undefined],
      ["latency", status.latency_ms !== undefined ? `${Math.round(status.latency_ms)} ms` : undefined],
      ["dream age", status.dream_age_ms !== undefined && status.dream_age_ms >= 0
        ? `${Math.round(status.dream_age_ms)} ms` : undefined],
      ["presenting", status.present === "dream" ? "each dream" : status.present === "camera"
        ? "every camera frame" : undefined],
      ["backend", status.backend],
      ["dream size", status.size],
      ["output size", status.output_size],
      ["layer", status.objective || status.layer],
      ["steps", status.steps],
      ["governor", status.governor],
      ["source", status.source],
      ["weights", status.weights],
      ["pages open", status.pages],
    ];
    const dl = $("status");
    dl.textContent = "";
    for (const [name, value] of fields) {
      if (value === undefined || value === null || value === "") continue;
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = String(value);
      dl.append(dt, dd);
    }
    const body = $("outputs").tBodies[0];
    body.textContent = "";
    for (const out of status.outputs || []) {
      const tr = body.insertRow();
      const state = out.failure ? `failed: ${out.failure}` : "ok";
      for (const [i, value] of [out.name, out.sent, out.dropped, state].entries()) {
        const td = tr.insertCell();
        td.textContent = String(value);
        if (i === 3 && out.failure) td.className = "bad";
      }
    }
    const problems = $("problems");
    problems.textContent = "";
    const recent = (status.errors || []).slice().reverse();
    if (!recent.length) {
      const li = document.createElement("li");
      li.className = "quiet";
      li.textContent = "none";
      problems.append(li);
    }
    for (const p of recent) {
      const li = document.createElement("li");
      li.className = p.level;
      li.textContent = `${p.time} ${p.message}`;
      problems.append(li);
    }
  }

  // ----- preview: one frame in flight; the next is asked for when this one is shown
  function setPreview(on) {
    $("preview").parentElement.classList.toggle("off", !on);
    send({ op: "preview", on });
  }

  function showFrame(blob) {
    const img = $("preview");
    const url = URL.createObjectURL(blob);
    const done = () => {
      if (previewUrl) URL.revokeObjectURL(previewUrl);
      previewUrl = url;
      send({ op: "ack" });
    };
    img.onload = done;
    img.onerror = done;
    img.src = url;
  }

  // ----- wiring
  // ----- the sound: meters, beat light, tap, the mapping
  function option(select, value, label) {
    const o = document.createElement("option");
    o.value = value;
    o.textContent = label || value;
    select.append(o);
  }

  function buildSound(desc) {
    sound = desc;
    $("sound-panel").hidden = !desc;
    if (!desc) return;
    const meters = $("meters");
    meters.textContent = "";
    for (const name of METERS) {
      const label = document.createElement("span");
      label.textContent = name;
      label.title = (desc.features.find((f) => f.name === name) || {}).help || "";
      const bar = document.createElement("div");
      bar.className = "meter";
      bar.setAttribute("role", "meter");
      bar.setAttribute("aria-label", name);
      bar.append(document.createElement("span"));
      const value = document.createElement("span");
      value.className = "meter-value";
      value.id = `meter-${name}`;
      bar.id = `bar-${name}`;
      meters.append(label, bar, value);
    }
    for (const [id, list] of [["map-feature", [...new Set([...desc.bands, ...desc.features.map((f) => f.name)])]],
      ["map-param", desc.params], ["map-mode", desc.modes], ["sound-mapping", desc.shipped]]) {
      $(id).textContent = "";
      for (const v of list) option($(id), v);
    }
    $("sound-save").disabled = !desc.saving;
    $("sound-input").textContent = desc.input;
    renderMapping(desc.mapping);
  }

  function renderSound(a) {
    if (!sound) return;
    for (const name of METERS) {
      const v = a.values[name] || 0;
      const top = METER_TOP[name] || 1;
      const bar = $(`bar-${name}`);
      if (!bar) continue;
      bar.firstChild.style.width = `${Math.min(100, (100 * v) / top)}%`;
      bar.setAttribute("aria-valuenow", v.toFixed(2));
      $(`meter-${name}`).textContent = v.toFixed(2);
    }
    $("beat-light").classList.toggle("on", (a.values.beat || 0) > 0.05);
    $("onset-light").classList.toggle("on", (a.values.onset || 0) > 0.05);
    $("bpm").textContent = a.values.bpm ? `${a.values.bpm.toFixed(1)} BPM` : "— BPM";
    $("tempo-source").textContent = `${a.tempo_source}${a.input_status && a.input_status !== "live" ? " · input " + a.input_status : ""}`;
  }

  function renderMapping(m) {
    const list = $("sound-maps");
    list.textContent = "";
    if (!m.maps.length && !m.triggers.length) {
      const li = document.createElement("li");
      li.className = "quiet";
      li.textContent = "nothing mapped";
      list.append(li);
    }
    for (const map of m.maps) {
      const li = document.createElement("li");
      li.textContent = `${map.feature} → ${map.param} (${map.mode} ${map.min}..${map.max}) `;
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "remove";
      remove.addEventListener("click", () => send({ op: "audio/unmap", param: map.param }));
      li.append(remove);
      list.append(li);
    }
    for (const t of m.triggers) {
      const li = document.createElement("li");
      li.textContent = t;
      list.append(li);
    }
  }

  function soundMessage(text) { $("sound-message").textContent = text; }

  document.addEventListener("DOMContentLoaded", () => {
    $("tempo-follow").addEventListener("click", () => send({ op: "audio/follow" }));
    $("sound-load").addEventListener("click", () => send({ op: "audio/mapping", name: $("sound-mapping").value }));
    $("sound-save").addEventListener("click", () => send({ op: "audio/save" }));
    $("sound-map-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const map = { feature: $("map-feature").value, param: $("map-param").value, mode: $("map-mode").value };
      if ($("map-min").value !== "" && $("map-max").value !== "") {
        map.min = Number($("map-min").value);
        map.max = Number($("map-max").value);
      }
      soundMessage("");
      send({ op: "audio/map", map });
    });
  });

  document.addEventListener("DOMContentLoaded", () => {
    $("preview-on").addEventListener("change", (e) => setPreview(e.target.checked));
    document.addEventListener("visibilitychange", () => setPreview($("preview-on").checked && !document.hidden));
    $("layer").addEventListener("change", (e) => send({ op: "layer", value: e.target.value }));
    $("channel-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const value = $("channel").value;
      send({ op: "channel", value: value === "" ? null : Number(value) });
    });
    $("whole-layer").addEventListener("click", () => send({ op: "channel", value: null }));
    $("objective-form").addEventListener("submit", (e) => {
      e.preventDefault();
      send({ op: "objective", value: $("objective").value });
    });
    $("preset-load").addEventListener("click", () => {
      const name = $("preset-list").value;
      if (name) send({ op: "preset/load", name });
    });
    $("preset-save-form").addEventListener("submit", (e) => {
      e.preventDefault();
      send({ op: "preset/save", name: $("preset-name").value.trim() });
    });
    connect();
  });
})();
