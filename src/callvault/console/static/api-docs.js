// /v2/docs: starts Swagger UI (served from this origin, console/api_docs.py) on the API's spec;
// a file rather than an inline script, so the Content-Security-Policy needs no 'unsafe-inline'.
"use strict";
window.addEventListener("DOMContentLoaded", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = window.SwaggerUIBundle({
    url: root.getAttribute("data-openapi-url"),
    domNode: root,
    deepLinking: true,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
});
