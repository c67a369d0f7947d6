"""``/docs``: Swagger UI on ``/schema``, served entirely by the API.

GPU clusters often have no internet, so nothing comes from a CDN: the Swagger UI bundle is
the one the ``openapi-ui-bundles`` package installs, served under ``/docs/assets``. The page
itself is public; where the API needs keys, the key typed into its field (kept in the
tab's sessionStorage) is sent with the request for ``/schema`` and with every "Try it out".
The page's own script is a file beside the dashboard's (``static/docs.js``): the page's
Content-Security-Policy (:mod:`conveyor.api.browser`) allows no inline script.
"""

from __future__ import annotations

from litestar import MediaType, Router, get
from litestar.static_files import create_static_files_router
from openapi_ui_bundles import swagger_ui

ASSETS = "/docs/assets"
PAGE_SCRIPT = "/dashboard/assets/docs.js"  # the page's own script: no inline script (CSP)

PAGE = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Conveyor API</title>
  <link rel="stylesheet" href="{ASSETS}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{ASSETS}/favicon-32x32.png">
</head>
<body>
  <form id="api-key" style="font-family: sans-serif; margin: 1em 2em">
    <label>API key <input name="key" type="password" size="50" autocomplete="off"></label>
    <button>Use</button> <span id="key-state"></span>
  </form>
  <div id="swagger-ui"></div>
  <script src="{ASSETS}/swagger-ui-bundle.js"></script>
  <script src="{PAGE_SCRIPT}"></script>
</body>
</html>
"""


@get("/docs", media_type=MediaType.HTML, sync_to_thread=False, include_in_schema=False)
def docs_page() -> str:
    return PAGE


def assets() -> Router:
    return create_static_files_router(
        path=ASSETS, directories=[swagger_ui.static_path], include_in_schema=False
    )
