"""A subscriber built with dapr-ext-grpc: daprd finds its subscriptions
through ListTopicSubscriptions and delivers with OnTopicEvent.

Usage: python pubsub_app.py PORT OUTFILE
Each delivery is appended to OUTFILE as one JSON line.
"""

import json
import sys

from dapr.clients.grpc._response import TopicEventResponse
from dapr.ext.grpc import App, SubscriptionMessage

app = App()
out_path = sys.argv[2]
tries = {}


def record(route, event: SubscriptionMessage):
    with open(out_path, 'a') as out:
        out.write(json.dumps({
            'route': route,
            'id': event.id(),
            'source': event.source(),
            'type': event.type(),
            'topic': event.topic(),
            'pubsub': event.pubsub_name(),
            'content_type': event.data_content_type(),
            'data': event.raw_data().decode(),
        }) + '\n')


@app.subscribe(pubsub_name='pubsub', topic='orders')
def orders(event: SubscriptionMessage) -> TopicEventResponse:
    record('orders', event)
    return TopicEventResponse('success')


@app.subscribe(pubsub_name='pubsub', topic='flaky')
def flaky(event: SubscriptionMessage) -> TopicEventResponse:
    record('flaky', event)
    tries[event.id()] = tries.get(event.id(), 0) + 1
    return TopicEventResponse('retry' if tries[event.id()] == 1 else 'success')


if __name__ == '__main__':
    app.run(int(sys.argv[1]), '127.0.0.1')
