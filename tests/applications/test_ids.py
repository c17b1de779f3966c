from callvault.applications.ids import ID_DIGITS, is_application_id, new_application_id


def test_ids_are_19_digit_numeric_strings_that_fit_int64() -> None:
    ids = {new_application_id() for _ in range(2000)}
    assert len(ids) == 2000
    for value in ids:
        assert len(value) == ID_DIGITS and value.isdigit() and not value.startswith("0")
        assert int(value) < 2**63
        assert is_application_id(value)


def test_is_application_id_refuses_other_strings() -> None:
    assert not is_application_id("123")
    assert not is_application_id("168464112323605424a")
    full_width = "".join(chr(0xFF10 + int(d)) for d in "1684641123236054244")
    assert full_width.isdigit() and not is_application_id(full_width)
