// /docs: Swagger UI on /schema, with the API key typed into the page's field (kept in the
// tab's sessionStorage) sent with the request for /schema and with every "Try it out".
"use strict";
const form = document.getElementById("api-key");
const key = () => sessionStorage.getItem("conveyor-api-key");
document.getElementById("key-state").textContent = key() ? "(a key is set)" : "";
form.addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("conveyor-api-key", form.key.value.trim());
  location.reload();
});
window.ui = SwaggerUIBundle({
  url: "/schema",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  requestInterceptor: (request) => {
    if (key()) request.headers["Authorization"] = "Bearer " + key();
    return request;
  },
});
