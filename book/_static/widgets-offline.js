// Loaded on pages with widgets, after require.js and before the ipywidgets HTML manager
// (vendor/html-manager/embed-amd.js); see nb_ipywidgets_js in _config.yml.
(function () {
  "use strict";

  // 1. Each AMD module in the manager's bundle ("@jupyter-widgets/base", ".../controls",
  //    ".../html-manager", ".../html-manager/dist/libembed-amd") loads its fonts relative to its
  //    own module URL, which RequireJS resolves against the page's folder (a 404) unless told
  //    that these modules live in our vendored copy. The longest matching path wins.
  var staticRoot = document.currentScript.src.replace(/[^\/]*$/, "");  // ".../_static/"
  var manager = staticRoot + "vendor/html-manager";
  window.require.config({paths: {"@jupyter-widgets": manager, "@jupyter-widgets/html-manager/dist": manager}});

  // 2. Widgets typeset their labels with MathJax 2's MathJax.Hub.Queue(["Typeset", Hub, element]).
  //    The book runs MathJax 3, which has no Hub, so every widget label would throw a TypeError.
  //    Route those calls to MathJax 3. MathJax is a deferred script, so it has replaced its
  //    configuration object by itself by DOMContentLoaded; widgets render later, on "load".
  function routeHubToMathJax3() {
    var mathjax = window.MathJax;
    if (!mathjax || mathjax.Hub || !mathjax.startup) {
      return;  // no MathJax on this page, or a MathJax that has a Hub already
    }
    mathjax.Hub = {
      Queue: function () {
        Array.prototype.forEach.call(arguments, function (job) {
          if (!Array.isArray(job) || job[0] !== "Typeset") {
            return;
          }
          var element = job[2];
          mathjax.startup.promise
            .then(function () { return mathjax.typesetPromise(element ? [element] : undefined); })
            .catch(function (error) { console.error("MathJax could not typeset a widget label:", error); });
        });
      }
    };
  }
  document.addEventListener("DOMContentLoaded", routeHubToMathJax3);
})();
