-- What metrics.k8s.io measured of a Pod in an interval: the largest CPU
-- (cores) and memory (GiB) sample, NULL when none was taken. CPU and memory
-- are charged as max(request, measured), and so is the Pod's share of its
-- node, kept with the node's hourly price so that the cost can be worked
-- out again. A rewrite of an interval keeps the largest measurement any
-- meter saw: a restarted meter, which lost its samples, never lowers a
-- charge.
ALTER TABLE usage_intervals
    ADD COLUMN cpu_used_cores  double precision,
    ADD COLUMN memory_used_gib double precision,
    ADD COLUMN node_share      double precision NOT NULL DEFAULT 0,
    ADD COLUMN node_price      double precision NOT NULL DEFAULT 0;
