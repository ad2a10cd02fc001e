"""Hypothesis strategies for institution configs: mostly plausible input, often just over a line."""
from hypothesis import strategies as st

from tenants.auth import KINDS

names = st.lists(st.from_regex(r"[a-z][a-z0-9._-]{0,12}", fullmatch=True), max_size=3)
urls = st.sampled_from(["https://idp.example.edu/auth", "http://127.0.0.1:9/token", "https://lms.example.edu/jwks",
                        "not-a-url"])
texts = st.one_of(st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True), st.just(""))
secrets = st.sampled_from(["a-long-enough-secret", "another-long-secret-value", "x" * 64, "short"])
cpus = st.one_of(st.none(), st.sampled_from([0.5, 1, 1, 2, "1.5", 6, 64, -1, "x"]))
memories = st.one_of(st.none(), st.sampled_from(["512M", "1G", "1Gi", "2G", "1.5G", "64G", "lots", "0G"]))
images = st.sampled_from(["quay.io/jupyter/scipy-notebook:2025-01-06", "quay.io/jupyter/base-notebook:2024-12-02",
                          "quay.io/jupyter/r-notebook:2025-01-06", "docker.io/evil/miner:1.0",
                          "quay.io/jupyter/minimal-notebook", "ghcr.io/x/y:1"])

# CILogon IdPs: the documented shape (username_derivation with its actions, allow_all, default, allowed_domains), the
# console's former {username_claim, allowed_domains} one, and shapes CILogonOAuthenticator refuses.
derivations = st.one_of(
    st.fixed_dictionaries({"username_claim": st.sampled_from(["email", "eppn"])}),
    st.fixed_dictionaries({"username_claim": st.just("email"), "action": st.just("strip_idp_domain")},
                          optional={"domain": st.sampled_from(["a.edu", "b.edu"])}),
    st.fixed_dictionaries({"username_claim": st.just("email"), "action": st.just("prefix")},
                          optional={"prefix": st.sampled_from(["ga", "gh"])}),
    st.fixed_dictionaries({"action": st.just("rename")}))
idps = st.dictionaries(
    st.sampled_from(["https://idp.a.edu", "https://idp.b.edu", "urn:mace:incommon:uiuc.edu", "idp.c.edu"]),
    st.one_of(st.fixed_dictionaries({"username_derivation": derivations},
                                    optional={"allow_all": st.booleans(), "default": st.booleans(),
                                              "allowed_domains": names}),
              st.fixed_dictionaries({"username_claim": st.sampled_from(["email", "eppn"]), "allowed_domains": names})),
    max_size=2)
mappings = st.one_of(st.dictionaries(st.sampled_from(["prompt", "access_type", "hd", "resource"]), texts, max_size=2),
                     st.sampled_from(["prompt: consent", "{bad yaml", "- a list", ""]))
numbers = st.one_of(st.integers(0, 10**6), st.sampled_from(["300", "x", -5, "1.5"]))

VALUES = {"text": texts, "url": urls, "list": names, "bool": st.booleans(), "secret": secrets, "number": numbers,
          "mapping": mappings}
BY_NAME = {"idps": idps}  # settings whose shape a class checks beyond its type


@st.composite
def auth_configs(draw):
    kind = KINDS[draw(st.sampled_from(sorted(KINDS)))]
    config = {"authenticator_class": kind.name}
    common = [field for field in kind.fields if field.common]
    # a few of the other settings each time (all of them at once would rarely make a config any class accepts)
    more = draw(st.lists(st.sampled_from([f for f in kind.fields if not f.common] or [None]), max_size=3,
                         unique_by=lambda f: f and f.name))
    for field in common + [f for f in more if f]:
        if draw(st.booleans()) or field.required and draw(st.integers(0, 9)) > 0 or not field.common:
            config[field.name] = draw(BY_NAME.get(field.name, VALUES[field.kind]))
    if draw(st.integers(0, 2)) == 0:
        config["allow_all"] = True
    return config


profiles = st.fixed_dictionaries(
    {"display_name": st.sampled_from(["Small", "Large", "GPU", "Teaching", ""])},
    optional={"description": texts, "image": images, "cpu_limit": cpus, "cpu_guarantee": cpus,
              "mem_limit": memories, "mem_guarantee": memories, "gpus": st.sampled_from([0, 1, 2]),
              "default": st.booleans()})

environments = st.fixed_dictionaries(
    {"image": images},
    optional={"default_url": st.sampled_from(["/lab", "/tree", "lab", "//evil"]), "cpu_limit": cpus,
              "cpu_guarantee": cpus, "mem_limit": memories, "mem_guarantee": memories,
              "gpus": st.sampled_from([0, 1]), "storage_capacity": st.sampled_from(["10Gi", "100Gi", "1Ti", "x"]),
              "cull_timeout": st.sampled_from([0, 3600, 7200, -5]), "cull_max_age": st.sampled_from([0, 86400]),
              "profiles": st.lists(profiles, max_size=3)})

policies = st.fixed_dictionaries({}, optional={
    "max_cpu": st.sampled_from([1, 2, 4, 8]), "max_memory": st.sampled_from(["2G", "8G", "32G"]),
    "gpus_allowed": st.booleans(), "max_storage": st.sampled_from(["10Gi", "50Gi"]),
    "allowed_registries": st.sampled_from([["quay.io/jupyter"], ["quay.io/jupyter", "ghcr.io"], []])})
