//! Glob patterns as Velero compiles them with github.com/gobwas/glob:
//! resource modifiers' `groupResource` (with '.' as the separator) and the
//! include/exclude lists of namespaces and resources (no separator).

/// A gobwas/glob pattern compiled with '.' as the separator, as Velero
/// matches `groupResource`: `*` is any run of non-separators, `**` any
/// run, `?` one non-separator, `[abc]`/`[!abc]`/`[a-z]` a class, `{a,b}`
/// alternatives, `\` escapes.
#[derive(Debug, Clone)]
pub(super) struct Glob {
    tokens: Vec<Token>,
    separator: Option<char>,
}

#[derive(Debug, Clone)]
enum Token {
    Literal(char),
    Star,
    SuperStar,
    Any,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    Alternatives(Vec<Vec<Token>>),
}

impl Glob {
    /// Compiles `pattern`; `separator` is what `*` and `?` do not match
    /// (`glob.Compile(pattern, separators...)`).
    pub fn compile(pattern: &str, separator: Option<char>) -> Result<Self, String> {
        let chars: Vec<char> = pattern.chars().collect();
        let (tokens, rest) = parse(&chars, false)?;
        if !rest.is_empty() {
            return Err(format!("unexpected {:?}", rest.iter().collect::<String>()));
        }
        Ok(Self { tokens, separator })
    }

    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        match_tokens(&self.tokens, &text, self.separator)
    }
}

/// Parses until the end, or (inside `{}`) until `,` or `}`.
fn parse(mut chars: &[char], nested: bool) -> Result<(Vec<Token>, &[char]), String> {
    let mut tokens = Vec::new();
    while let Some((&c, rest)) = chars.split_first() {
        if nested && (c == ',' || c == '}') {
            break;
        }
        chars = rest;
        match c {
            '*' if chars.first() == Some(&'*') => {
                chars = &chars[1..];
                tokens.push(Token::SuperStar);
            }
            '*' => tokens.push(Token::Star),
            '?' => tokens.push(Token::Any),
            '\\' => {
                let (&escaped, rest) = chars.split_first().ok_or("unexpected end of input")?;
                chars = rest;
                tokens.push(Token::Literal(escaped));
            }
            '[' => {
                let end = chars
                    .iter()
                    .position(|&c| c == ']')
                    .ok_or("unexpected end of input, expected ']'")?;
                let mut class = &chars[..end];
                chars = &chars[end + 1..];
                let negated = class.first() == Some(&'!');
                if negated {
                    class = &class[1..];
                }
                let mut ranges = Vec::new();
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == '-' {
                        ranges.push((class[i], class[i + 2]));
                        i += 3;
                    } else {
                        ranges.push((class[i], class[i]));
                        i += 1;
                    }
                }
                tokens.push(Token::Class { negated, ranges });
            }
            '{' => {
                let mut alternatives = Vec::new();
                loop {
                    let (glob, rest) = parse(chars, true)?;
                    alternatives.push(glob);
                    let (&end, rest) = rest
                        .split_first()
                        .ok_or("unexpected end of input, expected '}'")?;
                    chars = rest;
                    if end == '}' {
                        break;
                    }
                }
                tokens.push(Token::Alternatives(alternatives));
            }
            c => tokens.push(Token::Literal(c)),
        }
    }
    Ok((tokens, chars))
}

fn match_tokens(tokens: &[Token], text: &[char], separator: Option<char>) -> bool {
    let not_separator = |c: &char| Some(*c) != separator;
    let Some((token, rest)) = tokens.split_first() else {
        return text.is_empty();
    };
    match token {
        Token::Literal(c) => text.first() == Some(c) && match_tokens(rest, &text[1..], separator),
        Token::Any => {
            text.first().is_some_and(not_separator) && match_tokens(rest, &text[1..], separator)
        }
        Token::Class { negated, ranges } => {
            text.first()
                .is_some_and(|c| ranges.iter().any(|(lo, hi)| lo <= c && c <= hi) != *negated)
                && match_tokens(rest, &text[1..], separator)
        }
        Token::Star => (0..=text.len())
            .take_while(|&i| i == 0 || not_separator(&text[i - 1]))
            .any(|i| match_tokens(rest, &text[i..], separator)),
        Token::SuperStar => (0..=text.len()).any(|i| match_tokens(rest, &text[i..], separator)),
        Token::Alternatives(alternatives) => alternatives.iter().any(|alternative| {
            let mut joined = alternative.clone();
            joined.extend(rest.iter().cloned());
            match_tokens(&joined, text, separator)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_resource_globs_treat_the_dot_as_a_separator() {
        let glob = |p: &str| Glob::compile(p, Some('.')).unwrap();
        assert!(glob("*").matches("pods"));
        assert!(!glob("*").matches("deployments.apps"));
        assert!(glob("*.apps").matches("deployments.apps"));
        assert!(glob("**").matches("routes.route.openshift.io"));
        assert!(glob("*.route.openshift.io").matches("routes.route.openshift.io"));
        assert!(glob("{deployments,statefulsets}.apps").matches("statefulsets.apps"));
        assert!(glob("pod?").matches("pods") && !glob("pod?").matches("pod."));
        assert!(glob("[cp]*").matches("configmaps") && !glob("[!cp]*").matches("pods"));
        assert!(Glob::compile("[abc", None).is_err() && Glob::compile("{a,b", None).is_err());
    }

    #[test]
    fn without_a_separator_a_star_matches_dots_too() {
        let glob = Glob::compile("shop-*", None).unwrap();
        assert!(glob.matches("shop-a.b") && !glob.matches("other"));
    }
}
