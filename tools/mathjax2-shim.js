// ipywidgets' HTML widget manager (@jupyter-widgets/html-manager 1.x) typesets widget labels with
// the MathJax 2 API, MathJax.Hub.Queue(["Typeset", MathJax.Hub, element]); the book loads MathJax 3,
// which has no Hub, so every labelled widget threw "Cannot read properties of undefined (reading
// 'Queue')". This maps the one call the widget manager makes onto MathJax 3's typesetPromise.
// Load it before embed-amd.js (first entry of nb_ipywidgets_js).
(function () {
  function shim() {
    var mj = window.MathJax;
    if (mj && !mj.Hub) {
      mj.Hub = {
        Queue: function (command) {
          var element = command && command[2];
          if (mj.typesetPromise) {
            return mj.typesetPromise(element ? [element] : undefined);
          }
        },
      };
    }
  }
  shim();
  document.addEventListener("DOMContentLoaded", shim);
  window.addEventListener("load", shim);
})();
