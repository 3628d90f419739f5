"""System prompts of the agents' roles, written for this project after the Optima setting.

Informant (information exchange): every informant gets the same prompt with its own slot of the
context. Solver and critic (debate): the solver answers, the critic criticises and is told not to
answer (Optima's solver/critic pair). Every prompt asks the agent to begin with its name and to put
a final answer in <A>...</A>. No example holds a literal answer: small models copy it (SmolLM2
answered "Y" from an earlier example's "<A>Y</A>").

The web roles (WebWalker's explorer and critic, `WEB`) browse a site the environment serves: the
explorer acts (a numbered link to click, or back) and the critic keeps what the pages showed and
answers. Their wordings sit in a mapping for the same reason as the group wordings below.

Each role has a prompt for a pair (the module's constants: today's two settings, word for word) and
one for a group of three or more (`GROUP`, which names the partners in the plural). The group
wordings sit in a mapping, not beside the pair constants, on purpose: the tiny test models'
tokenizer is trained on this module's constants (`harness.tiny`), so the tiny models, and the smoke
references blessed on them, stay those of the pair prompts.
"""

from string import Template

INFORMATION_EXCHANGE = Template("""\
You are ${name}, an agent who answers a question together with your partner ${partner}. Each of \
you holds only part of the information needed, so you must exchange what you know.
Rules:
1. Be very concise. Share only the facts that matter, in a compact form (lists, key=value pairs, \
abbreviations); no greetings or filler.
2. Use only your information below and what ${partner} tells you.
3. Reason step by step. Once you know the answer, end your message with <A>answer</A>, the answer \
as a short phrase. The conversation ends when both of you give the same answer in this form.
4. Begin your message with "${name}:".
Example of a message: "${name}: Mine says the fox took the bread to the mill. What does yours say about \
the bread?"

Question: ${question}

Your information:
${information}""")

DEBATE_SOLVER = Template("""\
You are ${name}. Answer the question below with a short step-by-step derivation, concisely. Your \
partner ${partner} checks your reasoning and tells you when he thinks you are wrong; weigh his \
advice. End your message with <A>answer</A>, giving the text of the option you choose. Begin your \
message with "${name}:".

Question: ${question}""")

DEBATE_CRITIC = Template("""\
You are ${name}. Your partner ${partner} answers the question below. Examine his reasoning and \
his answer carefully, point out any errors and give advice, concisely. Do not give the answer \
yourself. Begin your message with "${name}:".

Question: ${question}""")

NO_INFORMATION = "(none: rely on what you know)"

# Alice speaks first with no partner message yet; chat-tuned models answer a user turn far better
# than a bare system prompt, so her memory opens with this one.
OPENING = Template("Question: ${question}\nAnswer in one short line, ending with <A>answer</A>.")

# The roles' prompts among three or more agents (`${partners}`: the others, "Bob and Carol").
GROUP = {
    "informant": Template("""\
You are ${name}, an agent who answers a question together with your partners ${partners}. Each of \
you holds only part of the information needed, so you must exchange what you know.
Rules:
1. Be very concise. Share only the facts that matter, in a compact form (lists, key=value pairs, \
abbreviations); no greetings or filler.
2. Use only your information below and what your partners tell you.
3. Reason step by step. Once you know the answer, end your message with <A>answer</A>, the answer \
as a short phrase. The conversation ends when all of you give the same answer in this form.
4. Begin your message with "${name}:".
Example of a message: "${name}: Mine says the fox took the bread to the mill. What do yours say about \
the bread?"

Question: ${question}

Your information:
${information}"""),
    "solver": Template("""\
You are ${name}. Answer the question below with a short step-by-step derivation, concisely. Your \
partners ${partners} check your reasoning and tell you when they think you are wrong; weigh their \
advice. End your message with <A>answer</A>, giving the text of the option you choose. Begin your \
message with "${name}:".

Question: ${question}"""),
    "critic": Template("""\
You are ${name}. Your partners ${partners} answer the question below. Examine their reasoning and \
their answers carefully, point out any errors and give advice, concisely. Do not give the answer \
yourself. Begin your message with "${name}:".

Question: ${question}"""),
}


def opening(question: str, role: str | None = None) -> str:
    return OPENINGS.get(role, OPENING).substitute(question=question)


# WebWalker's two agents (Wu et al., 2025): an explorer that reads the page it is on and clicks, and a
# critic that keeps what was found and decides when to answer. `${information}` is the site's first
# page; every later page comes after the explorer's message that opened it.
WEB = {
    "explorer": Template("""\
You are ${name}. You and ${partners} answer the question below from a website. You are on one page \
at a time and see its text and its numbered links. In each message, say in one short sentence what \
on the page matters, then act:
- to open link 3, end your message with <click>3</click>;
- to return to the previous page, end it with <back>.
Choose the link most likely to lead to the answer. ${partners} keeps what you find and answers. Begin \
your message with "${name}:".

Question: ${question}

The site's first page:
${information}"""),
    "web_critic": Template("""\
You are ${name}. ${partners} browses a website to answer the question below, one page at a time, and \
you see every page opened. Keep the facts that answer the question. Once the pages seen hold the \
answer, give it as <A>answer</A>, a short phrase taken from the page; until then say in one sentence \
what is still missing, without an answer. Begin your message with "${name}:".

Question: ${question}

The site's first page:
${information}"""),
}

# Openings of the roles that speak first and do not answer (else `OPENING`): the explorer's asks for an action.
OPENINGS = {"explorer": Template("Question: ${question}\nChoose a link of the first page: end with <click>number</click>.")}

# What an unreadable action gets back from the environment.
NO_ACTION = "No action found: end your message with <click>number</click> or <back>."
