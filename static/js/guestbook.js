// Live guestbook: new and deleted messages arrive over a WebSocket; reconnects after restarts.
(function () {
  "use strict";
  var list = document.getElementById("message-list");
  var status = document.getElementById("live-status");
  var count = document.getElementById("message-count");
  if (!list || !window.WebSocket) { return; }
  var firstPage = list.dataset.firstPage === "true";
  var retryDelay = 500;

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  function render(message) {
    // built with textContent only: a message's text is never parsed as HTML
    var item = document.createElement("li");
    item.className = "message fresh";
    item.dataset.id = String(message.id);
    var meta = document.createElement("div");
    meta.className = "meta";
    var author = document.createElement("strong");
    author.className = "author";
    author.textContent = message.name;
    var time = document.createElement("time");
    time.dateTime = message.created_at;
    time.textContent = message.created_at.slice(0, 16).replace("T", " ") + " UTC";
    meta.appendChild(author);
    meta.appendChild(document.createTextNode(" "));
    meta.appendChild(time);
    var text = document.createElement("p");
    text.className = "text";
    text.textContent = message.text;
    item.appendChild(meta);
    item.appendChild(text);
    return item;
  }

  function addMessage(message) {
    if (!firstPage || list.querySelector('[data-id="' + message.id + '"]')) { return; }
    var empty = document.getElementById("no-messages");
    if (empty) { empty.remove(); }
    // keep newest first even when messages arrive out of order
    var before = null;
    for (var i = 0; i < list.children.length; i++) {
      if (Number(list.children[i].dataset.id) < message.id) { before = list.children[i]; break; }
    }
    list.insertBefore(render(message), before);
  }

  function removeMessage(id) {
    var item = list.querySelector('[data-id="' + id + '"]');
    if (item) { item.remove(); }
  }

  function catchUp() {
    // messages posted while we were disconnected
    fetch("/api/messages", { headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (page) {
        if (!page) { return; }
        count.textContent = String(page.count);
        page.messages.slice().reverse().forEach(addMessage);
      })
      .catch(function () {});
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + list.dataset.livePath);
    setStatus("connecting", "connecting…");
    socket.onopen = function () {
      retryDelay = 500;
      setStatus("live", "live");
      catchUp();
    };
    socket.onmessage = function (event) {
      var data = JSON.parse(event.data);
      if (data.type === "message") {
        if (!list.querySelector('[data-id="' + data.message.id + '"]')) {
          count.textContent = String(Number(count.textContent) + 1);
        }
        addMessage(data.message);
      } else if (data.type === "deleted") {
        if (list.querySelector('[data-id="' + data.id + '"]')) {
          count.textContent = String(Math.max(0, Number(count.textContent) - 1));
        }
        removeMessage(data.id);
      }
    };
    socket.onclose = function () {
      setStatus("offline", "reconnecting…");
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 5000);
    };
  }

  connect();
})();
