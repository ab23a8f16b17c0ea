-- Restricted records are few; this index lets the purge ask "does this partition
-- hold a restricted row?" without scanning it, while it holds the table lock.
CREATE INDEX records_restricted ON records (id) WHERE restricted;
