"""A gRPC app built with dapr-ext-grpc that takes input binding events.

Usage: python blocks_app.py PORT EVENTS_FILE
Each event of the `ticker` binding appends one line to EVENTS_FILE.
"""

import sys

from dapr.ext.grpc import App, BindingRequest

app = App()
events_file = sys.argv[2]


@app.binding('ticker')
def ticker(request: BindingRequest):
    with open(events_file, 'a') as f:
        f.write(f"tick {request.binding_metadata.get('readTimeUTC', '')}\n")


if __name__ == '__main__':
    app.run(int(sys.argv[1]), '127.0.0.1')
