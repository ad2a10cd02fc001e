from clusters.health import DEGRADED, DOWN, HEALTHY, UNKNOWN, Sample, derive


def ok(duration=0.05, failures=0):
    return Sample(True, duration, failures)


def failed():
    return Sample(False, 2.0)


def test_rules():
    assert derive([])[0] == UNKNOWN
    assert derive([ok()] * 5)[0] == HEALTHY
    assert derive([failed(), ok(), ok()]) == (DEGRADED, "the last 1 probe(s) failed")
    assert derive([failed()] * 3 + [ok()]) == (DOWN, "no answer to 3 probes in a row")
    assert derive([ok(1.5)] * 5)[0] == DEGRADED
    assert derive([ok(failures=3), ok(failures=1)]) == (DEGRADED, "2 server spawn(s) failed recently")
    assert derive([ok(), failed(), failed(), failed()])[0] == HEALTHY  # it answered again
