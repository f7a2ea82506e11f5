-- Where an inference Pod's vLLM token counters stood at the last scrape of
-- an interval, NULL when none was taken there. A restarted meter goes on
-- from the last stored values, so it counts no token twice. A rewrite of an
-- interval keeps the larger token count: a meter that lost what it counted
-- never lowers one.
ALTER TABLE usage_intervals
    ADD COLUMN prompt_tokens_counter     double precision,
    ADD COLUMN generation_tokens_counter double precision;
