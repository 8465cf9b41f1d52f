-- Several instances on one PostgreSQL (docs/scaling.md, src/cluster/).
-- SQLite has the same tables so both schemas stay alike; a SQLite database
-- is only ever used by one instance, which never writes them.

-- Every instance that ran with [cluster] enabled: its heartbeat on the
-- database's clock, and what it is (pid, host, addresses) for `status`.
-- `run_id` is random per process start: a restarted instance of the same
-- name never inherits what its previous process held.
CREATE TABLE instances (
    name TEXT PRIMARY KEY,
    run_id BIGINT NOT NULL,
    started_ms BIGINT NOT NULL,
    seen_ms BIGINT NOT NULL,
    stopped_ms BIGINT,
    info TEXT NOT NULL
);

-- Who runs what: an account's receive side (kind 'account', channel ''),
-- one destination channel's lane (kind 'lane'), or a task only one
-- instance runs (kind 'task', e.g. retention). A lease is held by the
-- process `run_id` of instance `holder` until `expires_ms` (the database's
-- clock); `token` grows each time the lease changes hands or is given
-- back, and is the fencing token a holder's writes are checked against.
CREATE TABLE leases (
    kind TEXT NOT NULL,
    account TEXT NOT NULL,
    channel TEXT NOT NULL,
    holder TEXT,
    run_id BIGINT,
    token BIGINT NOT NULL DEFAULT 0,
    expires_ms BIGINT NOT NULL DEFAULT 0,
    since_ms BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, account, channel)
);
CREATE INDEX leases_run ON leases (run_id);

-- The lanes with rows waiting, found without reading every row ever sent:
-- what an instance sweeps for work nobody woke it for, and what each
-- instance's queue figures come from.
CREATE INDEX outbox_pending ON outbox (account, channel) WHERE state = 'pending';
