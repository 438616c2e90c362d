#!/usr/bin/env python3
"""Asks a running Prometheus, through its HTTP API, for what it scraped from p2.

    prometheus.py URL value EXPR
        prints the value of the instant query EXPR (the sum of its series), or
        "none" when it has no series; exits 1 when the API cannot be asked
    prometheus.py URL wait EXPR OP NUMBER SECONDS
        polls until the value of EXPR compares to NUMBER with OP (>, >=, ==), at most
        SECONDS; prints the last value; exits 0 when it held, 1 when it did not

Standard library only; every wait is bounded.
"""

import json
import operator
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

OPS = {">": operator.gt, ">=": operator.ge, "==": operator.eq}


def value(url, expr):
    """The sum of the instant vector EXPR, or None when it has no series."""
    query = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=5) as r:
        answer = json.load(r)
    if answer.get("status") != "success":
        raise RuntimeError(f"query {expr!r}: {answer}")
    data = answer["data"]
    if data["resultType"] == "scalar":
        return float(data["result"][1])
    series = data["result"]
    if not series:
        return None
    return sum(float(s["value"][1]) for s in series)


def main(argv):
    if len(argv) == 4 and argv[2] == "value":
        try:
            v = value(argv[1], argv[3])
        except (OSError, urllib.error.URLError, RuntimeError, ValueError) as e:
            print(f"cannot ask Prometheus: {e}", file=sys.stderr)
            return 1
        print("none" if v is None else f"{v:g}")
        return 0
    if len(argv) == 7 and argv[2] == "wait" and argv[4] in OPS:
        url, expr, op, target = argv[1], argv[3], OPS[argv[4]], float(argv[5])
        deadline = time.monotonic() + float(argv[6])
        last = "none"
        while True:
            try:
                v = value(url, expr)
                last = "none" if v is None else f"{v:g}"
                if v is not None and op(v, target):
                    print(last)
                    return 0
            except (OSError, urllib.error.URLError, RuntimeError, ValueError) as e:
                last = f"error: {e}"
            if time.monotonic() > deadline:
                print(last)
                return 1
            time.sleep(0.5)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
