"""Run by clusters/preflight.py with a hub's own Python: ``python preflight_check.py CONFIG_FILE``.

Loads CONFIG_FILE the way ``jupyterhub -f CONFIG_FILE`` does, builds the authenticator and the spawner from it and
checks the configured usernames as JupyterHub's startup does; prints one JSON line, {"ok": true} or {"ok": false,
"reason": "..."}, and exits 0 either way.  Only JupyterHub and its authenticators are imported: this file runs in
environments that do not have Hubfleet installed.
"""
import json
import logging
import sys


def check(config_file: str) -> str | None:
    """None when JupyterHub takes the configuration, else why not (one line)."""
    from jupyterhub.app import JupyterHub

    app = JupyterHub(log_level=logging.CRITICAL)
    try:
        app.load_config_file(config_file)
    except (Exception, SystemExit) as exc:
        # traitlets logs a bad value or a broken file and exits; the error itself is the exit's context
        return f"the configuration does not load: {_say(exc.__context__ or exc)}"
    try:
        authenticator = app.authenticator_class(parent=app)
    except (Exception, SystemExit) as exc:
        return f"{_name(app.authenticator_class)} refuses its settings: {_say(exc)}"
    try:
        app.spawner_class(config=app.config)
    except (Exception, SystemExit) as exc:
        return f"{_name(app.spawner_class)} refuses its settings: {_say(exc)}"
    # As JupyterHub.init_users: normalize, then validate, admins first.
    for field in ("admin_users", "allowed_users"):
        for name in sorted(getattr(authenticator, field)):
            if not authenticator.validate_username(authenticator.normalize_username(name)):
                return f"{field}: username {name!r} is not valid"
    return None


def _name(cls) -> str:
    return getattr(cls, "__name__", str(cls))


def _say(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    return text[:300]


if __name__ == "__main__":
    logging.disable(logging.CRITICAL)  # only the verdict goes to stdout; JupyterHub's own log lines are noise here
    try:
        problem = check(sys.argv[1])
    except (Exception, SystemExit) as exc:  # anything else JupyterHub would also stumble on
        problem = f"{exc.__class__.__name__}: {_say(exc)}"
    print(json.dumps({"ok": problem is None, "reason": problem or ""}))
