-- Reserved: another branch adds a migration with this number; the coordinator deletes
-- this placeholder when the branches are merged (it changes nothing).
SELECT 1;
