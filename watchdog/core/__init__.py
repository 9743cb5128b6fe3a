"""The supervision core: programs, children, checks, restarts, standbys; it names no product."""
