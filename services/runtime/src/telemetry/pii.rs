//! Masking of personal data in free text that goes to logs and dead-letter headers.

/// Masks personal data that might slip into free text (a parser or database error quoting
/// the value it choked on):
/// - values quoted with `"`, `'` or backticks are replaced by `…` (escaped quotes inside a
///   quoted value do not end it);
/// - a phone-like number (digits in groups joined by spaces, dashes, dots, parentheses or a
///   leading `+`, 7 digits or more, such as `138 1234 5678` or `+1 (555) 123-4567`) keeps
///   only its last 2 digits, and so does any other run of 5 or more digits (card and id
///   numbers). ISO dates (`2026-11-01`) stay readable.
#[must_use]
pub fn mask_pii(text: &str) -> String {
    mask_numbers(&redact_quoted(text))
}

fn redact_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if !matches!(c, '"' | '\'' | '`') {
            continue;
        }
        // An apostrophe inside a word ("don't") is not a quote.
        if c == '\'' && out.chars().rev().nth(1).is_some_and(char::is_alphanumeric) {
            continue;
        }
        let mut closed = false;
        while let Some(q) = chars.next() {
            if q == '\\' {
                chars.next();
            } else if q == c {
                closed = true;
                break;
            }
        }
        out.push('…');
        if closed {
            out.push(c);
        }
    }
    out
}

fn mask_numbers(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let starts_number = chars[i].is_ascii_digit()
            || (matches!(chars[i], '+' | '(')
                && chars.get(i + 1).is_some_and(char::is_ascii_digit));
        if !starts_number {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        // Extend over digits and single joiners that are followed by more digits.
        let start = i;
        let mut end = i;
        let mut j = i;
        while j < chars.len() {
            let c = chars[j];
            if c.is_ascii_digit() || (j == start && matches!(c, '+' | '(')) {
                j += 1;
                if c.is_ascii_digit() {
                    end = j;
                }
            } else if c == ')'
                || (matches!(c, ' ' | '-' | '.' | '(')
                    && chars
                        .get(j + 1)
                        .is_some_and(|n| n.is_ascii_digit() || *n == '('))
            {
                j += 1;
            } else {
                break;
            }
        }
        let candidate: String = chars[start..end].iter().collect();
        let digits = candidate.chars().filter(char::is_ascii_digit).count();
        if digits >= 7 && !is_iso_date(&candidate) {
            out.push_str(&keep_last_two_digits(&candidate, digits));
        } else {
            out.push_str(&mask_long_runs(&candidate));
        }
        i = end.max(start + 1);
    }
    out
}

fn is_iso_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(k, c)| k == 4 || k == 7 || c.is_ascii_digit())
}

fn keep_last_two_digits(s: &str, digits: usize) -> String {
    let mut seen = 0;
    s.chars()
        .map(|c| {
            if c.is_ascii_digit() {
                seen += 1;
                if seen + 2 > digits {
                    c
                } else {
                    '*'
                }
            } else {
                c
            }
        })
        .collect()
}

fn mask_long_runs(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let run = &chars[start..i];
            if run.len() >= 5 {
                out.extend(std::iter::repeat_n('*', run.len() - 2));
                out.extend(&run[run.len() - 2..]);
            } else {
                out.extend(run);
            }
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::mask_pii;

    #[test]
    fn phone_numbers_are_masked_in_log_text() {
        assert_eq!(mask_pii("call 13812345678 now"), "call *********78 now");
        assert_eq!(mask_pii("instalment 3 due 2026"), "instalment 3 due 2026");
    }

    #[test]
    fn grouped_phone_numbers_are_masked() {
        assert_eq!(mask_pii("call 138 1234 5678 now"), "call *** **** **78 now");
        assert_eq!(mask_pii("mobile 138-1234-5678."), "mobile ***-****-**78.");
        assert_eq!(mask_pii("work +86 10 6552 9988"), "work +** ** **** **88");
        assert_eq!(mask_pii("tel (555) 123-4567"), "tel (***) ***-**67");
    }

    #[test]
    fn dates_amounts_and_small_numbers_stay_readable() {
        assert_eq!(
            mask_pii("instalment 2 due 2026-11-01 failed, overdue 1250.00 CNY, DPD 23"),
            "instalment 2 due 2026-11-01 failed, overdue 1250.00 CNY, DPD 23"
        );
        assert_eq!(
            mask_pii("at 2026-11-24T13:52:09Z"),
            "at 2026-11-24T13:52:09Z"
        );
    }

    #[test]
    fn quoted_values_in_parser_errors_are_redacted() {
        assert_eq!(
            mask_pii(r#"invalid type: string "Zhang San", expected u32 at line 1"#),
            r#"invalid type: string "…", expected u32 at line 1"#
        );
        assert_eq!(
            mask_pii("unknown variant `Li Lei's mobile`, expected one of `phone_mobile`"),
            "unknown variant `…`, expected one of `…`"
        );
        assert_eq!(
            mask_pii("invalid input syntax for type uuid: 'Wang Wu'"),
            "invalid input syntax for type uuid: '…'"
        );
    }

    #[test]
    fn an_escaped_quote_does_not_end_the_redaction() {
        assert_eq!(
            mask_pii(r#"bad value "Zhang \"San\" 13812345678" here"#),
            r#"bad value "…" here"#
        );
        assert_eq!(mask_pii(r#"cut off "Zhang San"#), r#"cut off "…"#);
    }

    #[test]
    fn apostrophes_inside_words_are_not_quotes() {
        assert_eq!(
            mask_pii("the customer's number 13812345678"),
            "the customer's number *********78"
        );
    }
}
