// The chat page's client: send what is typed over the WebSocket, show what the room says.
(function () {
  var socket = new WebSocket("ws://" + location.host + "/chatsocket");
  var form = document.getElementById("messageform");
  var input = document.getElementById("message");
  socket.onopen = function () { document.body.setAttribute("data-connected", "yes"); };
  socket.onmessage = function (event) {
    var message = JSON.parse(event.data);
    if (document.getElementById("m" + message.id)) { return; }
    var holder = document.createElement("div");
    holder.innerHTML = message.html;
    document.getElementById("inbox").appendChild(holder.firstChild);
  };
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    socket.send(JSON.stringify({body: input.value}));
    input.value = "";
  });
})();
