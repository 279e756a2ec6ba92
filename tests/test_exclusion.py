from repo_encoder.exclusion import ExclusionConfig, encoder_sees, is_test_path, matches_any


def test_default_globs_cover_test_layouts() -> None:
    cfg = ExclusionConfig()
    for p in [
        "tests/test_a.py",
        "pkg/tests/helpers.py",
        "test_x.py",
        "pkg/x_test.py",
        "pkg/conftest.py",
        "test/data.py",
    ]:
        assert is_test_path(p, cfg), p
    for p in ["pkg/testing.py", "pkg/contest.py", "latest.py", "pkg/attest/x.py"]:
        assert not is_test_path(p, cfg), p


def test_with_tests_mode_sees_everything() -> None:
    assert not encoder_sees("tests/test_a.py", ExclusionConfig())
    assert encoder_sees("tests/test_a.py", ExclusionConfig(mode="with-tests"))


def test_star_does_not_cross_directories() -> None:
    assert matches_any("a/b.py", ("a/*.py",))
    assert not matches_any("a/c/b.py", ("a/*.py",))
    assert matches_any("a/c/b.py", ("a/**",))
