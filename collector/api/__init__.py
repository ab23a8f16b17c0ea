"""The query and data-subject-request API (Starlette, served by uvicorn).

    create_app(ApiConfig(store_url, keys)) -> Starlette
    serve(app, host="127.0.0.1", port=8443, ssl_certfile=None, ssl_keyfile=None)
"""

from collector.api.app import Api, ApiConfig, create_app
from collector.api.serve import serve

__all__ = ["Api", "ApiConfig", "create_app", "serve"]
