"""What infra/squall.yaml must keep, beyond what cfn-lint checks: the executor's
policy is least privilege (no wildcard action, no resource "*", S3 access only
under the data, work and result prefixes), the work prefix expires, the log
group has a retention, and the function is provided.al2023 with every setting a
parameter. Run with the Python of the cfn-lint install (tests/run does), whose
decoder reads CloudFormation's short tags:

    python3 tests/infra/check_template.py infra/squall.yaml
"""

import json
import sys

from cfnlint.decode import decode


def fail(message):
    print(f"infra check: {message}", file=sys.stderr)
    sys.exit(1)


def as_list(value):
    return value if isinstance(value, list) else [value]


def main(path):
    template, matches = decode(path)
    if matches or template is None:
        fail(f"{path} does not parse: {matches}")
    resources = template["Resources"]
    params = template["Parameters"]

    role = resources["ExecutorRole"]["Properties"]
    statements = [
        s for p in role["Policies"] for s in as_list(p["PolicyDocument"]["Statement"])
    ]
    if not statements:
        fail("the executor role has no policy")
    for s in statements:
        actions = as_list(s["Action"])
        if any("*" in a for a in actions):
            fail(f"statement {s.get('Sid')} grants a wildcard action: {actions}")
        for r in as_list(s["Resource"]):
            text = json.dumps(r)
            if r == "*" or '"*"' in text:
                fail(f"statement {s.get('Sid')} grants resource *")
            if any(a.startswith("s3:") and a != "s3:ListBucket" for a in actions):
                if not any(
                    f"${{{p}}}*" in text for p in ("DataPrefix", "WorkPrefix", "ResultPrefix")
                ):
                    fail(f"statement {s.get('Sid')} reaches S3 outside the three prefixes: {text}")
        if "s3:ListBucket" in actions and "Condition" not in s:
            fail("s3:ListBucket without a prefix condition")
    writes = {a for s in statements for a in as_list(s["Action"]) if a in ("s3:PutObject", "s3:DeleteObject")}
    data_writes = [
        s for s in statements
        if "${DataPrefix}" in json.dumps(s["Resource"]) and set(as_list(s["Action"])) & writes
    ]
    if data_writes:
        fail("the executor may write under the data prefix")

    rules = resources["Bucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    if not any(r.get("Prefix") == {"Ref": "WorkPrefix"} and "ExpirationInDays" in r for r in rules):
        fail("no lifecycle rule expires the work prefix")
    if "RetentionInDays" not in resources["LogGroup"]["Properties"]:
        fail("the log group keeps logs forever")

    function = resources["Function"]["Properties"]
    if function["Runtime"] != "provided.al2023" or function["Handler"] != "bootstrap":
        fail("the function must be provided.al2023 with handler bootstrap")
    for setting, param in [
        ("MemorySize", "MemorySize"),
        ("Timeout", "Timeout"),
    ]:
        if function[setting] != {"Ref": param}:
            fail(f"{setting} is not the {param} parameter")
    if function["EphemeralStorage"]["Size"] != {"Ref": "EphemeralStorage"}:
        fail("EphemeralStorage is not a parameter")
    if function["Architectures"] != [{"Ref": "Architecture"}]:
        fail("Architectures is not a parameter")
    if "ReservedConcurrency" not in params or "ReservedConcurrentExecutions" not in function:
        fail("reserved concurrency is not a parameter")
    if int(params["Timeout"]["MaxValue"]) > 900:
        fail("Lambda's timeout is at most 900 s")

    # The copies FunctionCount deploys are the function but for their names.
    copies = [n for n in resources if n.startswith("Function") and n != "Function"]
    if len(copies) != int(params["FunctionCount"]["AllowedValues"][-1]) - 1:
        fail(f"FunctionCount allows {params['FunctionCount']['AllowedValues'][-1]} functions, the template has {len(copies) + 1}")
    for name in copies:
        k = name.removeprefix("Function")
        copy = dict(resources[name]["Properties"])
        if resources[name].get("Condition") != name:
            fail(f"{name} does not exist only for FunctionCount >= {k}")
        if copy.pop("FunctionName") != {"Fn::Sub": f"${{FunctionName}}-{k}"}:
            fail(f"{name} is not named FunctionName-{k}")
        copy.pop("Description", None)
        original = {key: v for key, v in function.items() if key not in ("FunctionName", "Description")}
        if copy != original:
            fail(f"{name} differs from Function in more than its name")

    outputs = template["Outputs"]
    for name in ("FunctionName", "FunctionCount", "WorkDir", "Bucket", "DataUrl", "ResultUrl"):
        if name not in outputs:
            fail(f"output {name} missing (the squall flags need it)")
    print(f"infra check: {path}: {len(statements)} policy statements, all scoped; ok")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "infra/squall.yaml")
