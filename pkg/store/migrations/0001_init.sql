-- berth's metering and audit schema. Times are timestamptz, amounts are
-- absolute values per interval, so a row written twice holds the same value.

-- orgs and users are the tenants and developers seen in usage or audit rows.
CREATE TABLE orgs (
    name       text PRIMARY KEY,
    first_seen timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    org        text NOT NULL REFERENCES orgs (name),
    name       text NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org, name)
);

-- workspaces mirrors berth's workspace records: running, stopped or deleted.
CREATE TABLE workspaces (
    org        text NOT NULL REFERENCES orgs (name),
    namespace  text NOT NULL,
    name       text NOT NULL,
    user_name  text NOT NULL DEFAULT '',
    state      text NOT NULL CHECK (state IN ('running', 'stopped', 'deleted')),
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (namespace, name)
);
CREATE INDEX workspaces_org ON workspaces (org, state);

-- quotas mirrors each Organization's limits; NULL is no limit.
CREATE TABLE quotas (
    org                   text PRIMARY KEY REFERENCES orgs (name),
    max_workspaces        integer,
    max_gpus              integer,
    max_concurrent_builds integer,
    updated_at            timestamptz NOT NULL
);

-- usage_intervals holds what one Pod (or a stopped workspace's volume) used
-- in one fixed interval. The key is (uid, interval_start): the meter writes
-- the whole interval's values each time, never an increment.
CREATE TABLE usage_intervals (
    uid                uuid             NOT NULL,
    interval_start     timestamptz      NOT NULL,
    interval_seconds   integer          NOT NULL CHECK (interval_seconds > 0),
    org                text             NOT NULL,
    namespace          text             NOT NULL,
    name               text             NOT NULL,
    class              text             NOT NULL,
    user_name          text             NOT NULL DEFAULT '',
    workspace          text             NOT NULL DEFAULT '',
    project            text             NOT NULL DEFAULT '',
    node               text             NOT NULL DEFAULT '',
    pool               text             NOT NULL DEFAULT '',
    spot               boolean          NOT NULL DEFAULT false,
    running_seconds    double precision NOT NULL DEFAULT 0,
    cpu_core_seconds   double precision NOT NULL DEFAULT 0,
    memory_gib_seconds double precision NOT NULL DEFAULT 0,
    gpu_seconds        double precision NOT NULL DEFAULT 0,
    scratch_gib_hours  double precision NOT NULL DEFAULT 0,
    volume_gib_hours   double precision NOT NULL DEFAULT 0,
    prompt_tokens      bigint           NOT NULL DEFAULT 0,
    generation_tokens  bigint           NOT NULL DEFAULT 0,
    cost_dollars       double precision NOT NULL DEFAULT 0,
    -- final rows were written once the Pod had ended: no later write
    -- changes them.
    final              boolean          NOT NULL DEFAULT false,
    PRIMARY KEY (uid, interval_start)
);
CREATE INDEX usage_intervals_org_start ON usage_intervals (org, interval_start);

-- usage_hourly sums usage_intervals per Pod and hour (UTC). Each write of
-- intervals recomputes the hours it touched from usage_intervals, so it
-- holds absolute sums too. Usage queries read it.
CREATE TABLE usage_hourly (
    uid                uuid             NOT NULL,
    hour               timestamptz      NOT NULL,
    org                text             NOT NULL,
    class              text             NOT NULL,
    user_name          text             NOT NULL,
    workspace          text             NOT NULL,
    project            text             NOT NULL,
    pool               text             NOT NULL,
    spot               boolean          NOT NULL,
    running_seconds    double precision NOT NULL,
    cpu_core_seconds   double precision NOT NULL,
    memory_gib_seconds double precision NOT NULL,
    gpu_seconds        double precision NOT NULL,
    scratch_gib_hours  double precision NOT NULL,
    volume_gib_hours   double precision NOT NULL,
    prompt_tokens      bigint           NOT NULL,
    generation_tokens  bigint           NOT NULL,
    cost_dollars       double precision NOT NULL,
    PRIMARY KEY (uid, hour)
);
CREATE INDEX usage_hourly_org_hour ON usage_hourly (org, hour);

-- metered_ends records when each metered Pod ended. Once it is there, only
-- final rows are taken for the Pod.
CREATE TABLE metered_ends (
    uid      uuid PRIMARY KEY,
    ended_at timestamptz NOT NULL
);

-- builds holds each build Job's queue and run times: queue minutes are
-- released_at - queued_at, build minutes finished_at - released_at.
CREATE TABLE builds (
    uid         uuid PRIMARY KEY,
    org         text NOT NULL,
    namespace   text NOT NULL,
    name        text NOT NULL,
    project     text NOT NULL DEFAULT '',
    user_name   text NOT NULL DEFAULT '',
    queued_at   timestamptz,
    released_at timestamptz,
    finished_at timestamptz,
    succeeded   boolean
);
CREATE INDEX builds_org_queued ON builds (org, queued_at);

-- audit_logs is a hash chain per org: each row carries the previous row's
-- hash, and its own hash is an HMAC over its fields. Text an IDE or model
-- exchanged is kept only as keyed hashes.
CREATE TABLE audit_logs (
    org              text        NOT NULL,
    seq              bigint      NOT NULL CHECK (seq > 0),
    at               timestamptz NOT NULL,
    actor            text        NOT NULL,
    workspace        text        NOT NULL DEFAULT '',
    action           text        NOT NULL,
    detail           text        NOT NULL DEFAULT '',
    model            text        NOT NULL DEFAULT '',
    tokens_in        bigint      NOT NULL DEFAULT 0,
    tokens_out       bigint      NOT NULL DEFAULT 0,
    instruction_hmac bytea,
    response_hmac    bytea,
    patch_hmac       bytea,
    key_id           text        NOT NULL,
    prev_hash        bytea       NOT NULL,
    hash             bytea       NOT NULL,
    PRIMARY KEY (org, seq)
);
CREATE INDEX audit_logs_org_at ON audit_logs (org, at);
CREATE INDEX audit_logs_actor ON audit_logs (org, actor, at);
