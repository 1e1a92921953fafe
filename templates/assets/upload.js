// tmiDB console, files: sends the upload form with a progress bar. Without this
// script the form is sent as is (the browser shows its own progress).
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form || !window.FormData) { return; }
  var bar = document.getElementById("upload-progress");
  var status = document.getElementById("upload-status");
  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.upload.addEventListener("progress", function (p) {
      if (p.lengthComputable) {
        bar.max = p.total;
        bar.value = p.loaded;
        status.textContent = Math.round(100 * p.loaded / p.total) + " % sent";
      }
    });
    xhr.addEventListener("load", function () {
      // The server answers the form with a redirect to the files page saying what
      // happened (done or why not): go where it went.
      window.location.assign(xhr.responseURL);
    });
    xhr.addEventListener("error", function () { status.textContent = "the upload failed; try again"; });
    bar.hidden = false;
    status.textContent = "sending…";
    xhr.send(new FormData(form));
  });
}());
