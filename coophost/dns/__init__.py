"""DNS: the records members need, and checks against what DNS serves."""
