"""The study's numbers and conclusions from stored runs: statistics over seeds (stats.py), how a
claim is decided (verdicts.py), the report's claims (claims.py), Frankle et al.'s (frankle.py), the
headline (headline.py), the open questions (questions.py) and what gamma learned (gamma.py)."""
