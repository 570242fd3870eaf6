// Two fixes for saved ipywidgets in the offline book; loaded before require.js and embed-amd.js
// (first entry of nb_ipywidgets_js).
//
// 1. The HTML widget manager (@jupyter-widgets/html-manager 1.x) typesets widget labels with the
//    MathJax 2 API, MathJax.Hub.Queue(["Typeset", MathJax.Hub, element]); the book loads MathJax 3,
//    which has no Hub, so every labelled widget threw "Cannot read properties of undefined (reading
//    'Queue')". The one call the widget manager makes is mapped onto MathJax 3's typesetPromise.
// 2. The widget manager loads its icon fonts from "<its module URL>/..." and, unconfigured, that URL
//    is "<page folder>/@jupyter-widgets/html-manager/dist/", which does not exist (404s). A
//    RequireJS configuration set before require.js loads maps the module onto this script's own
//    folder (widgets/), where the build serves the manager's files, fonts included.
(function () {
  var here = document.currentScript && document.currentScript.src;
  if (here && typeof window.require === "undefined") {
    var folder = here.slice(0, here.lastIndexOf("/"));
    window.require = { paths: { "@jupyter-widgets/html-manager/dist": folder } };
  }

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
