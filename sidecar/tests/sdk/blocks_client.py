"""The official Python SDK's binding, configuration, lock and state-query
calls against daprd, as the SDK's documentation shows them.

Usage: python blocks_client.py REDIS_CONFIG_KEY
The configuration store's keys are written by the test through Redis;
this script changes one with the `cache` binding (bindings.redis on the same
database) to see the subscription report it.
Prints one line per check and exits non-zero on the first failure.
"""

import json
import os
import sys
import threading
import time

import grpc

from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprGrpcError
from dapr.clients.grpc._state import StateItem

key = sys.argv[1]


def check(name, cond, detail=''):
    if not cond:
        print(f'FAIL {name}: {detail}', flush=True)
        sys.exit(1)
    print(f'ok {name}', flush=True)


with DaprClient() as d:
    # Output bindings.
    name = f'sdk-{os.getpid()}.txt'
    resp = d.invoke_binding('files', 'create', 'written by the sdk', binding_metadata={'fileName': name})
    check('binding create', resp.binding_metadata.get('fileName') == name, resp.binding_metadata)
    resp = d.invoke_binding('files', 'get', binding_metadata={'fileName': name})
    check('binding get', resp.text() == 'written by the sdk', resp.text())
    try:
        d.invoke_binding('files', 'explode')
        check('binding bad operation refused', False, 'no error')
    except (DaprGrpcError, grpc.RpcError) as e:
        check('binding bad operation refused', 'explode' in str(e), str(e))

    # Configuration: read, subscribe, see a change, unsubscribe.
    items = d.get_configuration(store_name='config', keys=[key], config_metadata={}).items
    check('configuration get', items[key].value == 'v1' and items[key].version == '1', items)
    changes = []
    seen = threading.Event()

    def handler(sub_id, resp):
        for k, item in resp.items.items():
            changes.append((k, item.value))
            seen.set()

    sub_id = d.subscribe_configuration(store_name='config', keys=[key], handler=handler, config_metadata={})
    check('configuration subscribe id', bool(sub_id), sub_id)
    time.sleep(0.3)
    d.invoke_binding('cache', 'create', 'v2||2', binding_metadata={'key': key})
    check('configuration change seen', seen.wait(5) and (key, 'v2') in changes, changes)
    check('configuration unsubscribe', d.unsubscribe_configuration(store_name='config', id=sub_id) is True)

    # Locks, also as a context manager.
    resource = f'sdk-res-{os.getpid()}'
    with d.try_lock('lockstore', resource, 'owner-a', expiry_in_seconds=30) as lock:
        check('lock taken', lock.success)
        other = d.try_lock('lockstore', resource, 'owner-b', expiry_in_seconds=30)
        check('lock held against others', not other.success)
    again = d.try_lock('lockstore', resource, 'owner-b', expiry_in_seconds=30)
    check('lock released by the context manager', again.success)
    unlocked = d.unlock('lockstore', resource, 'owner-a')
    check('unlock of another owner refused', unlocked.status.name == 'lock_belongs_to_others', unlocked.status)
    unlocked = d.unlock('lockstore', resource, 'owner-b')
    check('unlock', unlocked.status.name == 'success', unlocked.status)

    # State query.
    d.save_bulk_state('statestore', [
        StateItem(key='e1', value=json.dumps({'state': 'WA', 'id': 3})),
        StateItem(key='e2', value=json.dumps({'state': 'CA', 'id': 1})),
        StateItem(key='e3', value=json.dumps({'state': 'WA', 'id': 2})),
    ])
    query = {'filter': {'EQ': {'state': 'WA'}}, 'sort': [{'key': 'id', 'order': 'ASC'}], 'page': {'limit': 1}}
    resp = d.query_state('statestore', json.dumps(query))
    check('query first page', [r.key for r in resp.results] == ['e3'] and resp.token, (resp.results, resp.token))
    query['page']['token'] = resp.token
    resp = d.query_state('statestore', json.dumps(query))
    check('query next page', [r.key for r in resp.results] == ['e1'] and resp.results[0].json()['id'] == 3, resp.results)
