"""The running session of `autopilot run`: the restartable iteration (`runner`), the session state
(`session`), one run's training child (`training`, `launch`) and the other commands (`commands`)."""
