-- Reserved: 0006 is taken by another change landing beside issue 13's 0007.
-- This no-op keeps the numbering contiguous on its own; on merge the other 0006 replaces it.
SELECT 1;
