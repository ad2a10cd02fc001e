"""Open in my hub: /open links that land a person in one of their hubs with a git repository pulled by nbgitpuller."""
from __future__ import annotations

from flask import Blueprint, g, redirect, render_template, request

from console.permissions import requires
from console.services import FieldErrors
from console.services import open_links as service

bp = Blueprint("open_links", __name__)


@bp.get("/open")
@requires("hub.use")
def open_link():
    """Straight to nbgitpuller on the person's one hub that can open the content (or the one ``hub=`` names);
    otherwise a page to choose among their hubs, or one saying none of them can.  A query that cannot be accepted
    answers 400 with what is wrong with each field."""
    try:
        wanted = service.parse(request.args)
    except FieldErrors as exc:
        return render_template("open/invalid.html", errors=exc.errors, args=request.args), 400
    options = service.choices(g.user, wanted)
    target = service.direct(options)
    if target:
        return redirect(target)
    return render_template("open/choose.html", wanted=wanted, options=options)
