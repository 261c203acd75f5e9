-- 0006: a claim records the moment its provider call starts. A claim left by a
-- crash without calling_at was never called and may be taken over (the call is
-- made then); one with calling_at may have reached the provider: reconcile.
ALTER TABLE send_ledger ADD COLUMN calling_at timestamptz;
