-- The cause class of an insight (insights/attribution.py): checkout | product | traffic |
-- tracking | pricing | '' (unknown). The explanation column now holds a sentence.
ALTER TABLE insights ADD COLUMN IF NOT EXISTS cause LowCardinality(String) DEFAULT '' AFTER feedback_note
