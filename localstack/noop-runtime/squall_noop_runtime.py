"""A LocalStack Lambda runtime executor that runs nothing, for host mode without
Docker: with it (LAMBDA_RUNTIME_EXECUTOR=noop, this folder on PYTHONPATH; the
entry point is in the .dist-info next to this file) CreateFunction through
CloudFormation reaches Active and the stack in infra/squall.yaml creates,
updates and deletes cleanly. Invoking the function fails; Squall's emulated
invocations go to `cargo lambda watch` instead (tests/emulators/start.sh).
"""

from localstack.services.lambda_.invocation.plugins import RuntimeExecutorPlugin
from localstack.services.lambda_.invocation.runtime_executor import RuntimeExecutor


class NoopExecutor(RuntimeExecutor):
    def start(self, env_vars):
        pass

    def stop(self):
        pass

    def get_address(self):
        return "127.0.0.1"

    def get_endpoint_from_executor(self):
        return "127.0.0.1"

    def get_runtime_endpoint(self):
        return "http://127.0.0.1:1"

    def invoke(self, payload):
        raise RuntimeError("the noop runtime executor runs nothing")

    def get_logs(self):
        return ""

    @classmethod
    def prepare_version(cls, function_version):
        pass

    @classmethod
    def cleanup_version(cls, function_version):
        pass

    @classmethod
    def validate_environment(cls):
        return True


class NoopPlugin(RuntimeExecutorPlugin):
    name = "noop"

    def load(self, *args, **kwargs):
        return NoopExecutor
