// One panel per lane, each fed by its lane's server-sent events. The server sends the lane's
// current screen on every connect, so a reload or a restarted daemon shows the right state;
// EventSource reconnects by itself (the server asks for a 1 s retry), and a stream the
// browser gave up on is opened anew. A panel that has heard nothing for OFFLINE_AFTER_MS
// says so over its last screen, so a passenger is never shown a stale "please enter".
(function () {
  "use strict";
  var OFFLINE_AFTER_MS = 5000;
  var lanes = JSON.parse(document.getElementById("lanes").textContent);
  var root = document.getElementById("screens");
  var template = document.getElementById("screen");

  function text(panel, cls, value) {
    panel.querySelector("." + cls).textContent = value || "";
  }

  function arrow(s) {
    if (s.kind === "approved" || s.kind === "free_exit") return "\u2191";
    if (s.kind === "idle") return "";
    return s.kind === "qr" ? "" : "\u2715";
  }

  function countdown(panel) {
    var at = Number(panel.dataset.expiresAt || 0);
    var left = Math.max(0, Math.round((at - Date.now()) / 1000));
    var m = Math.floor(left / 60);
    var s = String(left % 60).padStart(2, "0");
    text(panel, "countdown", at ? "Berlaku " + m + ":" + s + " \u00b7 Valid " + m + ":" + s : "");
  }

  function render(panel, s) {
    panel.dataset.id = String(s.id);
    panel.dataset.kind = s.kind;
    panel.dataset.tone = s.tone;
    panel.dataset.direction = s.direction;
    text(panel, "title-id", s.title_id);
    text(panel, "title-en", s.title_en);
    text(panel, "detail-id", s.detail_id);
    text(panel, "detail-en", s.detail_en);
    text(panel, "amount", s.amount);
    text(panel, "arrow", arrow(s));
    // The SVG is drawn by the daemon from the QR content; no passenger text is in it.
    var qr = panel.querySelector(".qr");
    if (s.qr_svg) {
      qr.innerHTML = s.qr_svg;
    } else {
      qr.replaceChildren();
    }
    panel.dataset.expiresAt = s.expires_at_ms ? String(s.expires_at_ms) : "";
    countdown(panel);
    // Pay by QR: offered on an idle screen of a lane that sells QRs; cancelled on its QR.
    panel.dataset.asking = "no";
    panel.querySelector(".qr-offer").hidden = !(s.kind === "idle" && s.qr_offer);
    text(panel, "offer-amount", s.qr_offer);
    panel.querySelector(".qr-cancel").hidden = s.kind !== "qr";
  }

  function post(lane, what) {
    var path = "/lane/" + encodeURIComponent(lane) + "/qr" + what;
    return fetch(path, { method: "POST", cache: "no-store" }).catch(function () {});
  }

  function buttons(lane, panel) {
    panel.querySelector(".qr-offer").addEventListener("click", function () {
      if (panel.dataset.asking === "yes") return;
      panel.dataset.asking = "yes";
      post(lane, "").then(function () {
        setTimeout(function () { panel.dataset.asking = "no"; }, 3000);
      });
    });
    panel.querySelector(".qr-cancel").addEventListener("click", function () {
      post(lane, "/cancel");
    });
  }

  function attach(lane, panel) {
    var source = null;
    var offlineTimer = null;
    function down() {
      panel.dataset.link = "down";
      if (offlineTimer === null) {
        offlineTimer = setTimeout(function () {
          panel.dataset.offline = "yes";
        }, OFFLINE_AFTER_MS);
      }
    }
    function up() {
      panel.dataset.link = "up";
      panel.dataset.offline = "no";
      if (offlineTimer !== null) {
        clearTimeout(offlineTimer);
        offlineTimer = null;
      }
    }
    function connect() {
      source = new EventSource("/lane/" + encodeURIComponent(lane) + "/events");
      source.onopen = up;
      source.addEventListener("screen", function (ev) {
        up();
        render(panel, JSON.parse(ev.data));
      });
      source.onerror = function () {
        down();
        if (source.readyState === EventSource.CLOSED) {
          setTimeout(connect, 1000);
        }
      };
    }
    down();
    connect();
  }

  lanes.forEach(function (lane) {
    var panel = template.content.firstElementChild.cloneNode(true);
    panel.dataset.lane = lane;
    root.appendChild(panel);
    buttons(lane, panel);
    attach(lane, panel);
  });
  setInterval(function () {
    root.querySelectorAll(".screen[data-kind='qr']").forEach(countdown);
  }, 1000);
})();
