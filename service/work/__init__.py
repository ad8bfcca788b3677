"""The work engine: how every long-running row (dataset, job, evaluation, event, webhook delivery) is taken by one
worker, advanced one step, and given back; how a failing step backs off and, after a bounded number of attempts, fails
its object; how a row is woken by its kind; and the typed state machine that writes each transition with its outbox
event.

Modules: ``names`` (task and queue names), ``kind`` (what a kind of row is), ``backoff`` (the one retry schedule),
``lease`` (claim, renew, release, back off, ``leased``), ``batch`` (claiming many rows at once, due rows), ``wake``
(sending a row's task), ``machine`` (state machines), ``views`` (a row's last error for the API), ``kinds`` (every
kind, for the sweeper). Nothing here imports a
domain package except ``kinds``; domains declare their own kind next to their steps.
"""
