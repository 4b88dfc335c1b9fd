"""Property-based fuzzing of every endpoint in /api/v1/openapi.json with schemathesis.

The live gunicorn answers cases generated from its own contract, valid
(positive) and invalid (negative), authenticated with a real token. No case
may get a 5xx, and every answer must match what the document promises.
"""

from __future__ import annotations

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance,
                                               response_headers_conformance,
                                               response_schema_conformance,
                                               status_code_conformance)

from photo_sync.ho.openapi import spec

# Every operation the document declares (the served document is this one, checked below).
OPERATIONS = [(method.upper(), path) for path, item in spec()["paths"].items()
              for method in item]
# Not `negative_data_rejection`: the API ignores query parameters it does not know (as HTTP
# APIs do for compatibility), which that check counts as accepting invalid data; and the
# token added to every case would undo the cases that drop the Authorization header.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
SETTINGS = hypothesis.settings(
    max_examples=40, deadline=None, derandomize=True, database=None,
    suppress_health_check=list(HealthCheck), phases=[hypothesis.Phase.generate])


@pytest.fixture(scope="module")
def ho(ho_stack, photo_factory):
    stack = ho_stack("fuzz")
    stack.import_dir(photo_factory(3, seed=51, min_kb=6, max_kb=12, mean_kb=8))
    stack.store_id, _ = stack.add_store("fuzzer")
    return stack


@pytest.fixture(scope="module")
def schema(ho):
    return schemathesis.openapi.from_url(f"{ho.api}/openapi.json")


def test_the_served_document_is_the_one_fuzzed(ho):
    served = requests.get(f"{ho.api}/openapi.json", timeout=10).json()
    assert served["paths"] == spec()["paths"]
    assert len(OPERATIONS) == 6  # the six endpoints of the v1 contract


@pytest.fixture(scope="module")
def known(ho):
    """Real values, so that valid cases also reach the code behind the 404s and 401s."""
    client = ho.session(ho.store_id)
    page = client.get(f"{ho.api}/sync/product-photos/").json()
    return {"token": ho.token(ho.store_id), "photo_ids": [p["id"] for p in page["photos"]],
            "store_id": ho.store_id, "secret": ho.stores[ho.store_id],
            "cursor": page["next_cursor"]}


def strategy_for(operation, mode: GenerationMode, known: dict):
    """Cases from the schema, and for positive runs also cases that carry real ids."""
    generated = operation.as_strategy(generation_mode=mode)
    if mode is GenerationMode.NEGATIVE:
        return generated
    path = operation.path
    if path.endswith("/download/"):
        return st.one_of(generated, st.sampled_from(known["photo_ids"]).flatmap(
            lambda photo_id: operation.as_strategy(path_parameters={"photo_id": photo_id})))
    if path.endswith("/auth/token/"):
        return st.one_of(generated, operation.as_strategy(
            body={"store_id": known["store_id"], "secret": known["secret"]}))
    if path.endswith("/sync/product-photos/"):
        return st.one_of(generated, operation.as_strategy(query={"cursor": known["cursor"]}),
                         operation.as_strategy(query={"store_id": known["store_id"]}))
    return generated


# Invalid cases need something to make invalid: health and openapi.json take no input.
RUNS = [pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
        for method, path in OPERATIONS
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if mode is GenerationMode.POSITIVE or not path.endswith(("/health/", "/openapi.json"))]


@pytest.mark.parametrize("method, path, mode", RUNS)
def test_endpoint_keeps_its_contract_under_fuzzing(ho, schema, known, method, path, mode):
    operation = schema[path][method]
    session = requests.Session()
    headers = {"Authorization": f"Bearer {known['token']}"}
    statuses: list[int] = []

    @SETTINGS
    @hypothesis.given(case=strategy_for(operation, mode, known))
    def run(case):
        response = case.call(base_url=ho.url, session=session, headers=headers, timeout=30)
        statuses.append(response.status_code)
        case.validate_response(response, checks=CHECKS, headers=headers)

    run()
    assert statuses and all(status < 500 for status in statuses)
    if mode is GenerationMode.POSITIVE and method == "GET" and "download" not in path:
        assert 200 in statuses  # valid cases reached the code behind the checks
