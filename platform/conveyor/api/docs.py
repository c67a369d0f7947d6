"""``/docs``: Swagger UI on ``/schema``, served entirely by the API.

GPU clusters often have no internet, so nothing comes from a CDN: the Swagger UI bundle is
the one the ``openapi-ui-bundles`` package installs, served under ``/docs/assets``.
"""

from __future__ import annotations

from litestar import MediaType, Router, get
from litestar.static_files import create_static_files_router
from openapi_ui_bundles import swagger_ui

ASSETS = "/docs/assets"

PAGE = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Conveyor API</title>
  <link rel="stylesheet" href="{ASSETS}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{ASSETS}/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{ASSETS}/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: "/schema",
      dom_id: "#swagger-ui",
      deepLinking: true,
      presets: [SwaggerUIBundle.presets.apis],
    }});
  </script>
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
