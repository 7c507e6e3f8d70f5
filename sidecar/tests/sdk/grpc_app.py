"""A gRPC app built with dapr-ext-grpc; daprd calls it through AppCallback.

Usage: python grpc_app.py PORT
"""

import json
import sys

from dapr.clients.grpc._response import InvokeMethodResponse
from dapr.ext.grpc import App, InvokeMethodRequest

app = App()


@app.method('echo')
def echo(request: InvokeMethodRequest):
    # Report what arrived so the caller can check it crossed both sidecars intact.
    metadata = {k: v[0] if isinstance(v, list) and v else v for k, v in request.metadata.items()}
    body = {
        'text': request.text(),
        'content_type': request.content_type,
        'caller': metadata.get('dapr-caller-app-id', ''),
        'callee': metadata.get('dapr-callee-app-id', ''),
    }
    return InvokeMethodResponse(json.dumps(body), 'application/json')


@app.method('upper')
def upper(request: InvokeMethodRequest):
    return InvokeMethodResponse(request.text().upper(), 'text/plain')


if __name__ == '__main__':
    app.run(int(sys.argv[1]), '127.0.0.1')
