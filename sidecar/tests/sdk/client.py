"""Drives daprd with the official Python SDK's DaprClient.

The sidecar's ports come from DAPR_HTTP_PORT / DAPR_GRPC_PORT, as for any SDK
user; DAPR_API_METHOD_INVOCATION_PROTOCOL picks HTTP or gRPC for invocation.
Usage: python client.py TARGET_APP_ID STORE_NAME CALLER_APP_ID
Prints one line per check and exits non-zero on the first failure.
"""

import json
import os
import sys

import grpc
from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprGrpcError, DaprHttpError
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType
from dapr.clients.grpc._state import Concurrency, StateItem, StateOptions

target, store, caller = sys.argv[1], sys.argv[2], sys.argv[3]
protocol = os.environ.get('DAPR_API_METHOD_INVOCATION_PROTOCOL', 'http')


def check(name, cond, detail=''):
    if not cond:
        print(f'FAIL {name}: {detail}', flush=True)
        sys.exit(1)
    print(f'ok {name}', flush=True)


with DaprClient() as d:
    # Invocation of the dapr-ext-grpc app through both sidecars.
    resp = d.invoke_method(target, 'echo', data='hello sdk', content_type='text/plain', http_verb='POST')
    got = json.loads(resp.text())
    check(f'{protocol} invoke body', got['text'] == 'hello sdk', got)
    check(f'{protocol} invoke callee id', got['callee'] == target, got)
    check(f'{protocol} invoke caller id', got['caller'] == caller, got)
    resp = d.invoke_method(target, 'upper', data='shout', http_verb='POST')
    check(f'{protocol} invoke second method', resp.text() == 'SHOUT', resp.text())

    try:
        d.invoke_method('no-such-app', 'echo', data='x', http_verb='POST')
        check(f'{protocol} invoke unknown app fails', False, 'no error raised')
    except (DaprGrpcError, DaprHttpError, grpc.RpcError):
        check(f'{protocol} invoke unknown app fails', True)

    if protocol != 'grpc':
        sys.exit(0)

    # State always goes over gRPC in this SDK; checked once, in the gRPC run.
    key = f'sdk-{os.getpid()}'
    d.save_state(store, key, 'v1')
    got = d.get_state(store, key)
    check('state save/get', got.data == b'v1', got.data)
    etag = got.etag
    check('state etag returned', etag != '', etag)

    d.save_state(store, key, 'v2', etag=etag,
                 options=StateOptions(concurrency=Concurrency.first_write))
    try:
        d.save_state(store, key, 'v3', etag=etag,
                     options=StateOptions(concurrency=Concurrency.first_write))
        check('state stale etag refused', False, 'no error raised')
    except DaprGrpcError as e:
        check('state stale etag refused', e.code() == grpc.StatusCode.ABORTED, e.code())
    check('state value after conflict', d.get_state(store, key).data == b'v2')

    d.save_bulk_state(store, [StateItem(key=f'{key}-a', value='A'), StateItem(key=f'{key}-b', value='B')])
    bulk = d.get_bulk_state(store, [f'{key}-a', f'{key}-b', f'{key}-missing'])
    values = {item.key: item.data for item in bulk.items}
    check('state bulk get', values == {f'{key}-a': b'A', f'{key}-b': b'B', f'{key}-missing': b''}, values)

    d.execute_state_transaction(store, [
        TransactionalStateOperation(key=f'{key}-a', data='A2'),
        TransactionalStateOperation(key=f'{key}-b', operation_type=TransactionOperationType.delete),
    ])
    check('state transaction upsert', d.get_state(store, f'{key}-a').data == b'A2')
    check('state transaction delete', d.get_state(store, f'{key}-b').data == b'')

    d.delete_state(store, key)
    check('state delete', d.get_state(store, key).data == b'')

    try:
        d.get_state('no-such-store', key)
        check('state unknown store refused', False, 'no error raised')
    except DaprGrpcError as e:
        check('state unknown store refused', e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.code())

    meta = d.get_metadata()
    check('metadata lists store', any(c.name == store for c in meta.registered_components),
          meta.registered_components)
