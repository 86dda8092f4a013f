-- The denial journal's progress (src/shared/journal.rs): the last record of a server start
-- (epoch, µs) that its background worker has written to quota.events. Updated in the same
-- transaction as the rows, so that a worker killed before it frees a batch in shared memory
-- skips what it wrote when it starts again. One row, made here.
CREATE TABLE quota.journal_progress (
    singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch            bigint NOT NULL,
    written_through  bigint NOT NULL
);
INSERT INTO quota.journal_progress (epoch, written_through) VALUES (0, 0);
ALTER TABLE quota.journal_progress ENABLE ROW LEVEL SECURITY;
