"""Flask extensions, created unbound and initialised in ``create_app``."""
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import event
from sqlalchemy.engine import Engine


class JsonErrorsForApiOnly(Api):
    """flask-smorest's Api, minus its app-wide JSON error handler: pages keep HTML errors (see errors.py)."""

    def _register_error_handlers(self):
        pass


db = SQLAlchemy()
migrate = Migrate()
csrf = CSRFProtect()
login_manager = LoginManager()
api = JsonErrorsForApiOnly()


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, _record):
    # WAL lets the in-process worker write while pages read; foreign keys are off by default in SQLite.  In WAL mode
    # synchronous=NORMAL never corrupts the database and skips an fsync per commit (7 ms each here): a power cut
    # may lose the last commits, which the reconciler redoes (its operations are level-triggered).
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
