"""Publishes with the SDK's DaprClient (publish_event, publish_events) and
reads a streaming subscription (subscribe, respond_success).

Usage: python pubsub_client.py
Prints 'ok <check>' for each check that passed.
"""

import json
import sys

from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprGrpcError


def main():
    with DaprClient() as d:
        d.publish_event(
            pubsub_name='pubsub',
            topic_name='orders',
            data=json.dumps({'order': 1}),
            data_content_type='application/json',
        )
        print('ok publish_event')
        res = d.publish_events(
            pubsub_name='pubsub',
            topic_name='orders',
            data=['{"order": 2}', '{"order": 3}'],
            data_content_type='application/json',
        )
        assert not res.failed_entries, res.failed_entries
        print('ok publish_events')
        d.publish_event(pubsub_name='pubsub', topic_name='flaky', data='again', data_content_type='text/plain')
        print('ok publish_event text')
        try:
            d.publish_event(pubsub_name='nope', topic_name='orders', data='x')
            print('unknown pubsub was accepted')
        except DaprGrpcError as e:
            print('ok unknown pubsub refused', e.code())

        sub = d.subscribe(pubsub_name='pubsub', topic='feed')
        try:
            d.publish_event(pubsub_name='pubsub', topic_name='feed', data='{"n": 7}', data_content_type='application/json')
            msg = sub.next_message()
            assert msg is not None, 'no message on the stream'
            assert json.loads(msg.raw_data()) == {'n': 7}, msg.raw_data()
            assert msg.topic() == 'feed' and msg.pubsub_name() == 'pubsub', (msg.topic(), msg.pubsub_name())
            sub.respond_success(msg)
            print('ok streaming subscription')
        finally:
            sub.close()


if __name__ == '__main__':
    main()
    sys.stdout.flush()
