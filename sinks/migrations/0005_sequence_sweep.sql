-- 0005: the sequence sweeper (agents/schedule.py) looks for leads still in_sequence
-- whose current touch already has an outcome; this keeps that scan to the leads
-- actually in a sequence, however many have finished.
CREATE INDEX leads_in_sequence_idx ON leads (campaign_id, lead_id) WHERE state = 'in_sequence';
