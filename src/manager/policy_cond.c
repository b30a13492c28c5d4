/* Policy Enforcer: the CONDITIONS language (see policy_cond.h).
 *
 * A tokenizer that tracks line and column, a recursive-descent parser whose
 * depth is bounded, and a tree of at most FM_COND_MAX_NODES nodes in one
 * array; types are checked while parsing. */
#include "manager/policy_cond.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "basic/util.h"

typedef enum { T_END, T_NUM, T_STR, T_IDENT, T_LP, T_RP, T_LT, T_LE, T_GT, T_GE, T_EQ, T_NE,
	       T_AND, T_OR, T_NOT, T_TRUE, T_FALSE } tok_kind;

typedef enum { N_NUM, N_STR, N_BOOL, N_VAR, N_NOT, N_AND, N_OR, N_CMP } node_kind;

typedef struct node {
	node_kind kind;
	fm_cond_type type;
	tok_kind op;           /* N_CMP */
	int a, b;              /* children (indices) */
	double num;
	char *str;
	bool b_val;
	size_t var;
	int line, col;
} node;

struct fm_cond {
	node *nodes;
	int n, root;
	size_t nvars;
	bool *reads;
	char **names;          /* the variables', for evaluation errors */
};

typedef struct parser {
	const char *src, *p;
	int line, col;
	/* the current token */
	tok_kind tok;
	int tline, tcol;
	const char *tstart;
	size_t tlen;
	double tnum;
	char *tstr;
	const fm_cond_var *vars;
	size_t nvars;
	fm_cond *c;
	int depth;
	fm_error *err;
} parser;

static int perr(parser *ps, int line, int col, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int perr(parser *ps, int line, int col, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return fm_error_set(ps->err, -EINVAL, "line %d, column %d: %s", line, col, msg);
}

static const char *tok_name(tok_kind k)
{
	static const char *const names[] = { "the end", "a number", "a string", "a name", "'('", "')'", "'<'",
					     "'<='", "'>'", "'>='", "'=='", "'!='", "'and'", "'or'", "'not'",
					     "'true'", "'false'" };
	return names[k];
}

static void advance_char(parser *ps)
{
	if (*ps->p == '\n') {
		ps->line++;
		ps->col = 1;
	} else {
		ps->col++;
	}
	ps->p++;
}

static bool is_ident_start(char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_'; }
static bool is_digit(char ch) { return ch >= '0' && ch <= '9'; }

/* Reads the next token into ps->tok. */
static int next(parser *ps)
{
	free(ps->tstr);
	ps->tstr = NULL;
	while (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')
		advance_char(ps);
	ps->tline = ps->line;
	ps->tcol = ps->col;
	ps->tstart = ps->p;
	char ch = *ps->p;
	if (!ch) {
		ps->tok = T_END;
		return 0;
	}
	if (ch == '(' || ch == ')') {
		ps->tok = ch == '(' ? T_LP : T_RP;
		advance_char(ps);
		return 0;
	}
	if (ch == '<' || ch == '>' || ch == '=' || ch == '!') {
		bool eq = ps->p[1] == '=';
		if ((ch == '=' || ch == '!') && !eq)
			return perr(ps, ps->tline, ps->tcol, "'%c' alone is not an operator (did you mean '%c='?)", ch, ch);
		ps->tok = ch == '<' ? (eq ? T_LE : T_LT) : ch == '>' ? (eq ? T_GE : T_GT) : ch == '=' ? T_EQ : T_NE;
		advance_char(ps);
		if (eq)
			advance_char(ps);
		return 0;
	}
	if (is_digit(ch) || (ch == '-' && (is_digit(ps->p[1]) || ps->p[1] == '.')) || (ch == '.' && is_digit(ps->p[1]))) {
		const char *s = ps->p;
		if (*s == '-')
			s++;
		while (is_digit(*s))
			s++;
		if (*s == '.')
			for (s++; is_digit(*s); s++)
				;
		if (*s == 'e' || *s == 'E') {
			const char *e = s + 1;
			if (*e == '+' || *e == '-')
				e++;
			if (is_digit(*e))
				for (s = e; is_digit(*s); s++)
					;
		}
		size_t len = (size_t)(s - ps->p);
		if (len > FM_COND_MAX_NUMBER)
			return perr(ps, ps->tline, ps->tcol, "a number of more than %d characters", FM_COND_MAX_NUMBER);
		char buf[FM_COND_MAX_NUMBER + 1];
		memcpy(buf, ps->p, len);
		buf[len] = 0;
		char *end;
		ps->tnum = strtod(buf, &end);
		if (*end || !isfinite(ps->tnum))
			return perr(ps, ps->tline, ps->tcol, "\"%s\" is not a finite number", buf);
		if (is_ident_start(*s) || is_digit(*s))
			return perr(ps, ps->tline, ps->tcol, "a number runs into a name (put a space or an operator between)");
		while (ps->p < s)
			advance_char(ps);
		ps->tok = T_NUM;
		return 0;
	}
	if (ch == '"') {
		advance_char(ps);
		char buf[FM_COND_MAX_STRING + 1];
		size_t n = 0;
		for (;;) {
			char c = *ps->p;
			if (!c || c == '\n')
				return perr(ps, ps->tline, ps->tcol, "a string that is not closed (a '\"' is missing)");
			if (c == '"')
				break;
			if (c == '\\') {
				char e = ps->p[1];
				if (e != '"' && e != '\\')
					return perr(ps, ps->line, ps->col, "only \\\" and \\\\ may follow a backslash in a string");
				advance_char(ps);
				c = e;
			} else if ((unsigned char)c < 0x20) {
				return perr(ps, ps->line, ps->col, "a control character in a string");
			}
			if (n == FM_COND_MAX_STRING)
				return perr(ps, ps->tline, ps->tcol, "a string of more than %d bytes", FM_COND_MAX_STRING);
			buf[n++] = c;
			advance_char(ps);
		}
		advance_char(ps);
		buf[n] = 0;
		ps->tstr = fm_xstrdup(buf);
		ps->tok = T_STR;
		return 0;
	}
	if (is_ident_start(ch)) {
		const char *s = ps->p;
		while (is_ident_start(*s) || is_digit(*s))
			s++;
		size_t len = (size_t)(s - ps->p);
		if (len > 64)
			return perr(ps, ps->tline, ps->tcol, "a name of more than 64 characters");
		static const struct { const char *w; tok_kind k; } kw[] = {
			{ "and", T_AND }, { "or", T_OR }, { "not", T_NOT }, { "true", T_TRUE }, { "false", T_FALSE },
		};
		ps->tok = T_IDENT;
		for (size_t i = 0; i < ARRAY_SIZE(kw); i++)
			if (strlen(kw[i].w) == len && !strncmp(ps->p, kw[i].w, len))
				ps->tok = kw[i].k;
		ps->tlen = len;
		while (ps->p < s)
			advance_char(ps);
		return 0;
	}
	if ((unsigned char)ch >= 0x80)
		return perr(ps, ps->tline, ps->tcol, "a character outside ASCII outside a string");
	return perr(ps, ps->tline, ps->tcol, "'%c' has no meaning here (the language has numbers, \"strings\", names, "
		    "comparisons, and/or/not and parentheses)", ch);
}

static int add_node(parser *ps, node nd)
{
	if (ps->c->n == FM_COND_MAX_NODES)
		return perr(ps, nd.line, nd.col, "the condition is too large (more than %d terms)", FM_COND_MAX_NODES);
	ps->c->nodes[ps->c->n] = nd;
	return ps->c->n++;
}

static const char *type_name(fm_cond_type t)
{
	return t == FM_COND_NUMBER ? "a number" : t == FM_COND_STRING ? "a string" : "a boolean";
}

static int parse_or(parser *ps);

static int parse_primary(parser *ps)
{
	node nd = { .line = ps->tline, .col = ps->tcol };
	int r;
	switch (ps->tok) {
	case T_NUM:
		nd.kind = N_NUM;
		nd.type = FM_COND_NUMBER;
		nd.num = ps->tnum;
		break;
	case T_STR:
		nd.kind = N_STR;
		nd.type = FM_COND_STRING;
		nd.str = ps->tstr;
		ps->tstr = NULL;
		break;
	case T_TRUE:
	case T_FALSE:
		nd.kind = N_BOOL;
		nd.type = FM_COND_BOOL;
		nd.b_val = ps->tok == T_TRUE;
		break;
	case T_IDENT: {
		size_t i;
		for (i = 0; i < ps->nvars; i++)
			if (strlen(ps->vars[i].name) == ps->tlen && !strncmp(ps->vars[i].name, ps->tstart, ps->tlen))
				break;
		if (i == ps->nvars)
			return perr(ps, nd.line, nd.col, "\"%.*s\" is not among the policy's CONTEXT variables",
				    (int)ps->tlen, ps->tstart);
		nd.kind = N_VAR;
		nd.type = ps->vars[i].type;
		nd.var = i;
		ps->c->reads[i] = true;
		break;
	}
	case T_LP:
		if ((r = next(ps)) < 0)
			return r;
		if ((r = parse_or(ps)) < 0)
			return r;
		if (ps->tok != T_RP)
			return perr(ps, ps->tline, ps->tcol, "expected ')' to close the '(' of line %d, column %d, found %s",
				    nd.line, nd.col, tok_name(ps->tok));
		return next(ps) < 0 ? ps->err->code : r;
	default:
		return perr(ps, ps->tline, ps->tcol, "expected a value, a name or '(', found %s", tok_name(ps->tok));
	}
	if ((r = add_node(ps, nd)) < 0) {
		free(nd.str);
		return r;
	}
	return next(ps) < 0 ? ps->err->code : r;
}

static int parse_compare(parser *ps)
{
	int line = ps->tline, col = ps->tcol;
	int a = parse_primary(ps), b;
	if (a < 0)
		return a;
	tok_kind op = ps->tok;
	if (op < T_LT || op > T_NE)
		return a;
	int oline = ps->tline, ocol = ps->tcol;
	if (next(ps) < 0 || (b = parse_primary(ps)) < 0)
		return ps->err->code;
	fm_cond_type ta = ps->c->nodes[a].type, tb = ps->c->nodes[b].type;
	if (ta != tb)
		return perr(ps, oline, ocol, "%s compares %s with %s", tok_name(op), type_name(ta), type_name(tb));
	if (ta != FM_COND_NUMBER && op != T_EQ && op != T_NE)
		return perr(ps, oline, ocol, "%s orders numbers only; %s can be compared with '==' or '!='",
			    tok_name(op), type_name(ta));
	if (ps->tok >= T_LT && ps->tok <= T_NE)
		return perr(ps, ps->tline, ps->tcol, "comparisons do not chain: use 'and' (a < b and b < c)");
	return add_node(ps, (node){ .kind = N_CMP, .type = FM_COND_BOOL, .op = op, .a = a, .b = b, .line = line,
				    .col = col });
}

static int want_bool(parser *ps, int i, const char *what)
{
	const node *nd = &ps->c->nodes[i];
	if (nd->type != FM_COND_BOOL)
		return perr(ps, nd->line, nd->col, "%s takes true or false, not %s", what, type_name(nd->type));
	return 0;
}

static int parse_not(parser *ps)
{
	if (ps->tok != T_NOT)
		return parse_compare(ps);
	int line = ps->tline, col = ps->tcol, a;
	if (++ps->depth > FM_COND_MAX_DEPTH)
		return perr(ps, line, col, "nested more than %d deep", FM_COND_MAX_DEPTH);
	if (next(ps) < 0 || (a = parse_not(ps)) < 0 || want_bool(ps, a, "'not'") < 0)
		return ps->err->code;
	ps->depth--;
	return add_node(ps, (node){ .kind = N_NOT, .type = FM_COND_BOOL, .a = a, .line = line, .col = col });
}

static int parse_binary(parser *ps, tok_kind op)
{
	int line = ps->tline, col = ps->tcol;
	int a = op == T_OR ? parse_binary(ps, T_AND) : parse_not(ps);
	if (a < 0)
		return a;
	while (ps->tok == op) {
		int b;
		if (next(ps) < 0 || (b = op == T_OR ? parse_binary(ps, T_AND) : parse_not(ps)) < 0)
			return ps->err->code;
		if (want_bool(ps, a, tok_name(op)) < 0 || want_bool(ps, b, tok_name(op)) < 0)
			return ps->err->code;
		a = add_node(ps, (node){ .kind = op == T_OR ? N_OR : N_AND, .type = FM_COND_BOOL, .a = a, .b = b,
					 .line = line, .col = col });
		if (a < 0)
			return a;
	}
	return a;
}

static int parse_or(parser *ps)
{
	if (++ps->depth > FM_COND_MAX_DEPTH)
		return perr(ps, ps->tline, ps->tcol, "nested more than %d deep", FM_COND_MAX_DEPTH);
	int r = parse_binary(ps, T_OR);
	ps->depth--;
	return r;
}

void fm_cond_free(fm_cond *c)
{
	if (!c)
		return;
	for (int i = 0; i < c->n; i++)
		free(c->nodes[i].str);
	free(c->nodes);
	free(c->reads);
	for (size_t i = 0; c->names && i < c->nvars; i++)
		free(c->names[i]);
	free(c->names);
	free(c);
}

int fm_cond_parse(const char *src, const fm_cond_var *vars, size_t nvars, fm_cond **out, fm_error *err)
{
	*out = NULL;
	if (!src)
		return fm_error_set(err, -EINVAL, "no condition");
	size_t len = strnlen(src, FM_COND_MAX_LEN + 1);
	if (len > FM_COND_MAX_LEN)
		return fm_error_set(err, -EINVAL, "the condition is longer than %d bytes", FM_COND_MAX_LEN);
	fm_cond *c = fm_xcalloc(1, sizeof(*c));
	c->nodes = fm_xcalloc(FM_COND_MAX_NODES, sizeof(*c->nodes));
	c->nvars = nvars;
	c->reads = fm_xcalloc(nvars ? nvars : 1, sizeof(*c->reads));
	c->names = fm_xcalloc(nvars ? nvars : 1, sizeof(*c->names));
	for (size_t i = 0; i < nvars; i++)
		c->names[i] = fm_xstrdup(vars[i].name);
	parser ps = { .src = src, .p = src, .line = 1, .col = 1, .vars = vars, .nvars = nvars, .c = c, .err = err };
	int r = next(&ps);
	if (r == 0 && ps.tok == T_END)
		r = perr(&ps, 1, 1, "the condition is empty");
	if (r == 0)
		r = parse_or(&ps);
	if (r >= 0 && ps.tok != T_END)
		r = perr(&ps, ps.tline, ps.tcol, "expected 'and', 'or' or the end, found %s", tok_name(ps.tok));
	if (r >= 0 && c->nodes[r].type != FM_COND_BOOL)
		r = perr(&ps, 1, 1, "the condition is %s, not true or false", type_name(c->nodes[r].type));
	free(ps.tstr);
	if (r < 0) {
		fm_cond_free(c);
		return r;
	}
	c->root = r;
	*out = c;
	return 0;
}

bool fm_cond_reads(const fm_cond *c, size_t i) { return i < c->nvars && c->reads[i]; }

/* A value: numbers in *num, strings in *str, booleans in *b. */
static int eval(const fm_cond *c, int i, const fm_cond_value *values, double *num, const char **str, bool *b,
		fm_error *err)
{
	const node *nd = &c->nodes[i];
	double x, y;
	const char *s, *t;
	bool p, q;
	int r;
	switch (nd->kind) {
	case N_NUM:
		*num = nd->num;
		return 0;
	case N_STR:
		*str = nd->str;
		return 0;
	case N_BOOL:
		*b = nd->b_val;
		return 0;
	case N_VAR: {
		const fm_cond_value *v = &values[nd->var];
		if (!v->known)
			return fm_error_set(err, -ENODATA, "%s has no value yet", c->names[nd->var]);
		if (nd->type == FM_COND_NUMBER && !isfinite(v->num))
			return fm_error_set(err, -EDOM, "%s is not a finite number", c->names[nd->var]);
		if (nd->type == FM_COND_STRING && !v->str)
			return fm_error_set(err, -ENODATA, "%s has no value yet", c->names[nd->var]);
		*num = v->num;
		*str = v->str;
		*b = v->b;
		return 0;
	}
	case N_NOT:
		if ((r = eval(c, nd->a, values, num, str, &p, err)) < 0)
			return r;
		*b = !p;
		return 0;
	case N_AND:
	case N_OR:
		/* both sides always: a missing value on either denies, whatever the other says */
		if ((r = eval(c, nd->a, values, num, str, &p, err)) < 0 ||
		    (r = eval(c, nd->b, values, num, str, &q, err)) < 0)
			return r;
		*b = nd->kind == N_AND ? p && q : p || q;
		return 0;
	case N_CMP:
		if ((r = eval(c, nd->a, values, &x, &s, &p, err)) < 0 ||
		    (r = eval(c, nd->b, values, &y, &t, &q, err)) < 0)
			return r;
		if (c->nodes[nd->a].type == FM_COND_NUMBER) {
			switch (nd->op) {
			case T_LT: *b = x < y; break;
			case T_LE: *b = x <= y; break;
			case T_GT: *b = x > y; break;
			case T_GE: *b = x >= y; break;
			case T_EQ: *b = x == y; break;
			default: *b = x != y; break;
			}
		} else if (c->nodes[nd->a].type == FM_COND_STRING) {
			*b = (strcmp(s, t) == 0) == (nd->op == T_EQ);
		} else {
			*b = (p == q) == (nd->op == T_EQ);
		}
		return 0;
	}
	return fm_error_set(err, -EINVAL, "malformed condition");
}

int fm_cond_eval(const fm_cond *c, const fm_cond_value *values, bool *result, fm_error *err)
{
	double num = 0;
	const char *str = NULL;
	return eval(c, c->root, values, &num, &str, result, err);
}
