"""Scorers other projects published, reproduced exactly (ViGoRL: ``vigorl``)."""
