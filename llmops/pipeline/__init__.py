"""Pipeline: the stage line (stages), the engine that runs it, and the gathering of every config
check (checks)."""
